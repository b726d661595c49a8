//! The container image's runtime stage provides every shared library the
//! legate binary loads.

use std::path::Path;
use std::process::Command;

use crate::{deploy_dir, read};

/// Libraries of glibc and libgcc in gcr.io/distroless/cc-debian12, plus the
/// kernel's vDSO. The image has no other shared library that a Rust binary
/// could load (its libssl is unused, because TLS is rustls).
const RUNTIME_LIBRARIES: [&str; 9] = [
    "linux-vdso.so.1",
    "ld-linux-x86-64.so.2",
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libutil.so.1",
];

fn linked_libraries(binary: &Path) -> Vec<String> {
    let output = Command::new("ldd").arg(binary).output().expect("ldd runs (Debian package libc-bin)");
    assert!(output.status.success(), "ldd {} failed", binary.display());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(|library| library.rsplit('/').next().unwrap().to_string())
        .collect()
}

#[test]
fn runtime_image_has_linked_libraries() {
    let mut binaries = vec![crate::support::legate_bin()];
    // The image ships the release build; check it too when it exists.
    let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/legate");
    if release.is_file() {
        binaries.push(release);
    }
    for binary in binaries {
        let libraries = linked_libraries(&binary);
        assert!(libraries.iter().any(|library| library == "libc.so.6"), "{} links glibc: {libraries:?}", binary.display());
        for library in &libraries {
            assert!(RUNTIME_LIBRARIES.contains(&library.as_str()), "{} needs {library}, which the runtime image lacks", binary.display());
        }
    }
}

#[test]
fn dockerfile_runs_as_nonroot() {
    let dockerfile = read(&deploy_dir().join("Dockerfile"));
    let stages: Vec<&str> = dockerfile.lines().filter(|line| line.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage: {stages:?}");
    assert!(stages[0].contains("bookworm"), "the build stage must use Debian 12's glibc, as the runtime does");
    assert!(stages[1].contains("distroless/cc-debian12"), "runtime stage: {}", stages[1]);
    assert!(dockerfile.contains("USER 65532:65532"), "the image must run as a non-root user");
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/legate\"]"));
}
