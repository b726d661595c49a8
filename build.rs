//! Compiles `proto/` into Rust types and a descriptor set, with no `protoc`
//! needed on the machine: protox parses the files.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = Path::new("proto");
    let files = proto_files(proto_root)?;
    // The folder too, so that a new .proto file reruns this script.
    println!("cargo:rerun-if-changed={}", proto_root.display());
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let descriptors = protox::Compiler::new([proto_root])?
        .include_imports(true)
        .include_source_info(false)
        .open_files(&files)?
        .file_descriptor_set();

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("file_descriptor_set.bin"), prost::Message::encode_to_vec(&descriptors))?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The control plane encodes each resource once and shares the bytes
        // across every delta stream that sends it.
        .bytes(".envoy.service.discovery.v3.Resource.resource")
        .include_file("_includes.rs")
        .compile_fds(descriptors)?;

    compile_test_protos(&out_dir)?;
    Ok(())
}

/// Compiles `tests/proto/` (the gRPC test service of the end-to-end tests)
/// into `OUT_DIR/test_protos`, apart from the library's own types.
fn compile_test_protos(out_dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("tests/proto");
    let files = proto_files(root)?;
    println!("cargo:rerun-if-changed={}", root.display());
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let mut compiler = protox::Compiler::new([root])?;
    compiler.include_imports(true).open_files(&files)?;
    let descriptors = compiler.file_descriptor_set();
    let target = out_dir.join("test_protos");
    std::fs::create_dir_all(&target)?;
    // The test service also serves reflection, and the transcoder tests read
    // the `google.api.http` method options, which only this encoding keeps.
    std::fs::write(target.join("descriptor_set.bin"), compiler.encode_file_descriptor_set())?;
    tonic_prost_build::configure().build_client(true).build_server(true).out_dir(&target).compile_fds(descriptors)?;
    Ok(())
}

/// Lists every `.proto` file under `root`, sorted so the build is reproducible.
fn proto_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "proto") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}
