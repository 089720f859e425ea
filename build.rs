//! Compiles `proto/` with protox (a pure-Rust protobuf compiler, so no system `protoc` is needed),
//! generates the tonic server and client code, and writes the encoded descriptor set that the
//! reflection service serves.

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &["proto/chat.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS.iter())?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
