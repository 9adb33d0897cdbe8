//! Generates the vhsm.v1 gRPC code with the protoc shipped in `protoc-bin-vendored` (no network).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded; PROTOC tells prost-build which protoc to run.
    std::env::set_var("PROTOC", protoc);
    let files = [
        "vhsm/v1/common.proto",
        "vhsm/v1/crypto.proto",
        "vhsm/v1/admin.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&files, &["."])?;
    Ok(())
}
