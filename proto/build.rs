// The vendored protoc keeps a fresh machine from needing the Debian package; a PROTOC in
// the environment still wins.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    // The hashes of an Append (one per leaf, about 20 per proof) as `Bytes`: slices of one
    // buffer instead of one allocation each.
    config.bytes([
        ".sealtrail.v1.AppendRequest.leaf_hashes",
        ".sealtrail.v1.InclusionProof.hashes",
    ]);
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_with_config(config, &["proto/sealtrail/v1/signer.proto"], &["proto"])?;
    Ok(())
}
