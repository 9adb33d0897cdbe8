//! `xks load`: an operator's load generator against any XKS proxy endpoint, signed and shaped
//! like KMS's calls, every answer verified; prints a summary and one JSON line.

pub mod args;
pub mod client;
pub mod cpu;
pub mod progress;
pub mod report;
pub mod schedule;
pub mod sign;
pub mod stats;
pub mod target;
pub mod verify;
pub mod worker;
pub mod workload;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

pub use args::{Op, XksLoadArgs};

use crate::errors::{CliError, CliResult, ExitKind};
use client::Connector;
use progress::Progress;
use report::{Report, RunInfo};
use schedule::{Plan, Schedule};
use sign::Signer;
use stats::Stats;
use worker::{Shared, Worker};
use workload::Workload;

/// Time between the set-up and the first send, so every connection starts on the same plan.
const START_DELAY: Duration = Duration::from_millis(20);

/// Runs `xks load`.
pub async fn run(args: &XksLoadArgs) -> CliResult<()> {
    args.validate()?;
    let shared = Arc::new(prepare(args).await?);
    let workers = open_all(args, &shared).await?;

    let start = Instant::now() + START_DELAY;
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let plan = Plan {
        measure_from,
        end: measure_from + Duration::from_secs_f64(args.duration),
    };
    let pids = args.cpu_pids.clone();
    let cpu_before = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from).await;
        cpu_snapshot(&pids)
    });
    let (stop_progress, stop_rx) = tokio::sync::oneshot::channel();
    let progress_task = progress::spawn(shared.progress.clone(), start, measure_from, stop_rx);

    let mut schedules: Vec<Option<Schedule>> = match args.rate {
        Some(r) => schedule::pace(start, r, args.connections, plan.end)
            .map_err(|e| CliError::usage(format!("cannot start the pacer thread: {e}")))?
            .into_iter()
            .map(Some)
            .collect(),
        None => Vec::new(),
    };
    let mut tasks = JoinSet::new();
    for w in workers {
        let i = usize::try_from(w.index()).unwrap_or(usize::MAX);
        let schedule = schedules.get_mut(i).and_then(Option::take);
        tasks.spawn(w.run(plan, schedule));
    }
    let mut total = Stats::new();
    while let Some(r) = tasks.join_next().await {
        let s = r.map_err(|e| CliError::usage(format!("a load connection failed: {e}")))?;
        total.merge(&s);
    }
    let elapsed = Instant::now().saturating_duration_since(measure_from);
    let after = cpu_snapshot(&args.cpu_pids);
    let before = cpu_before
        .await
        .map_err(|e| CliError::usage(format!("CPU sampling failed: {e}")))?;
    let _ = stop_progress.send(());
    if let Some(t) = progress_task {
        let _ = t.await;
    }

    let cpu = before
        .into_iter()
        .filter_map(|(k, b)| after.get(&k).map(|a| (k, a.saturating_sub(b))))
        .collect();
    let report = Report::new(run_info(args, &shared), &total, elapsed.as_secs_f64(), cpu);
    eprint!("{}", report.summary());
    let line = serde_json::to_string(&report)
        .map_err(|e| CliError::usage(format!("cannot format the report: {e}")))?;
    println!("{line}");
    verdict(&total)
}

/// Resolves the endpoint, credential, TLS and requests; nothing is sent yet.
async fn prepare(args: &XksLoadArgs) -> CliResult<Shared> {
    let ep = target::parse_url(&args.url)?;
    let (cred, config_prefix) = match (&args.proxy_config, &args.access_key_id, &args.secret_file) {
        (Some(path), _, _) => {
            let (c, p) = target::read_proxy_config(path)?;
            (c, Some(p))
        }
        (None, Some(akid), Some(file)) => (target::read_secret_file(akid, file)?, None),
        // INVARIANT: validate() requires --proxy-config or --access-key-id, and clap ties
        // --access-key-id to --secret-file.
        _ => return Err(CliError::usage("no credential given")),
    };
    let prefix = target::pick_prefix(&[
        ("--uri-prefix", args.uri_prefix.clone()),
        ("--url", ep.url_prefix.clone()),
        ("--proxy-config", config_prefix),
    ])?;
    let client = match (&args.client_cert, &args.client_key) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        _ => None,
    };
    let tls = target::tls_config(&args.tls_ca, client)?;
    let addr = target::resolve(&ep, args.connect_to).await?;
    let connector = Connector::new(addr, target::server_name(&ep.host)?, tls);
    let signer = Signer::new(&cred, &args.region, &ep.authority);
    let workload = Workload::new(
        args.op,
        &prefix,
        args.key_id.as_deref(),
        &args.region,
        args.payload_bytes,
        args.aad_bytes,
    )?;
    let mut id = [0u8; 4];
    getrandom::fill(&mut id)
        .map_err(|e| CliError::usage(format!("operating system randomness failed: {e}")))?;
    Ok(Shared {
        connector,
        signer,
        workload,
        timeout: Duration::from_millis(args.timeout_ms),
        run_id: format!("xks-load-{}", hex::encode(id)),
        progress: Arc::new(Progress::default()),
        url: args.url.clone(),
        prefix,
    })
}

/// Opens every connection (and, for Decrypt, makes each one's ciphertext) concurrently.
async fn open_all(args: &XksLoadArgs, shared: &Arc<Shared>) -> CliResult<Vec<Worker>> {
    let mut set = JoinSet::new();
    for i in 0..args.connections {
        let sh = shared.clone();
        let op = args.op;
        set.spawn(async move {
            let mut w = Worker::open(i, sh.clone()).await.map_err(|e| {
                let hint = match e {
                    client::ClientError::Tls(_) => Some(
                        "check --tls-ca (the CA of the endpoint's certificate), the URL's host \
                         name, and --client-cert/--client-key if the endpoint requires mutual TLS",
                    ),
                    _ => None,
                };
                let err = CliError::new(
                    ExitKind::Unreachable,
                    format!("cannot connect to {}: {e}", sh.url),
                );
                match hint {
                    Some(h) => err.with_hint(h),
                    None => err,
                }
            })?;
            if op == Op::Decrypt {
                w.seal_once().await.map_err(|why| {
                    CliError::usage(format!(
                        "--op decrypt needs a ciphertext first, but the set-up Encrypt failed: {why}"
                    ))
                })?;
            }
            Ok::<_, CliError>(w)
        });
    }
    let mut workers = Vec::with_capacity(set.len());
    while let Some(r) = set.join_next().await {
        let w = r.map_err(|e| CliError::usage(format!("connection set-up failed: {e}")))??;
        workers.push(w);
    }
    workers.sort_by_key(Worker::index);
    Ok(workers)
}

fn run_info(args: &XksLoadArgs, shared: &Shared) -> RunInfo {
    RunInfo {
        endpoint: shared.url.clone(),
        uri_prefix: shared.prefix.clone(),
        op: args.op.as_str(),
        mode: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        connections: args.connections,
        target_rate: args.rate,
        duration_s: args.duration,
        warmup_s: args.warmup,
        payload_bytes: args.payload_bytes,
        aad_bytes: args.aad_bytes,
    }
}

/// CPU time so far of this process ("self") and of each pid that can be read.
fn cpu_snapshot(pids: &[u32]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    if let Some(t) = cpu::cpu_time_us(None) {
        out.insert("self".to_string(), t);
    }
    for p in pids {
        if let Some(t) = cpu::cpu_time_us(Some(*p)) {
            out.insert(p.to_string(), t);
        }
    }
    out
}

/// The exit status: 0 only if every counted request was answered 200 and verified.
fn verdict(total: &Stats) -> CliResult<()> {
    if total.requests() == 0 {
        return Err(CliError::usage(
            "no request was counted: lengthen --duration (or lower --warmup)",
        ));
    }
    if total.verify_failures() > 0 {
        return Err(CliError::new(
            ExitKind::Integrity,
            format!(
                "{} of {} answers failed verification",
                total.verify_failures(),
                total.requests()
            ),
        ));
    }
    if total.failed() > 0 {
        let mut why: Vec<String> = total
            .by_error_name
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        why.extend(
            total
                .transport
                .iter()
                .map(|(k, v)| format!("no answer ({k}) {v}")),
        );
        return Err(CliError::usage(format!(
            "{} of {} requests failed: {}",
            total.failed(),
            total.requests(),
            why.join(", ")
        )));
    }
    Ok(())
}
