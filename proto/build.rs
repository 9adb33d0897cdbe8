//! Generates the vhsm.v1 gRPC code with the protoc shipped in `protoc-bin-vendored` (no network).

/// Messages whose fields include passphrases, shares, plaintext or key material.
const SECRET_MESSAGES: &[&str] = &[
    "PassphraseMode",
    "SharesMode",
    "UnsealRequest",
    "RekeyRequest",
    "RekeyCommitRequest",
    "ShareSubmission",
    "EncryptedShare",
    "NewImportKeyResponse",
    "ImportKeyRequest",
    "EncryptRequest",
    "DecryptResponse",
    "WrapKeyRequest",
    "UnwrapKeyResponse",
    "GenerateRandomResponse",
    "CreateBackupResponse",
    "RestoreBackupRequest",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts are single-threaded; PROTOC tells prost-build which protoc to run.
    std::env::set_var("PROTOC", protoc);
    let files = [
        "vhsm/v1/common.proto",
        "vhsm/v1/crypto.proto",
        "vhsm/v1/admin.proto",
        "vhsm/v1/peer.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    tonic_prost_build::configure()
        // Messages that carry secrets get a hand-written, redacting `Debug` (src/redact.rs).
        .skip_debug(SECRET_MESSAGES.iter().map(|m| format!(".vhsm.v1.{m}")))
        .build_server(true)
        .build_client(true)
        .compile_protos(&files, &["."])?;
    Ok(())
}
