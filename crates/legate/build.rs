//! Link options for the release binary on x86_64 Linux, where Rust links
//! with its own lld by default (since 1.90).
//!
//! - `link/symbol-order.txt` puts the functions the proxy runs from start to
//!   rest side by side at the front of `.text`, then those it runs per
//!   request. The kernel maps code in 64 KiB runs around each page fault, so
//!   code spread over the whole binary keeps most of `.text` resident. Laid
//!   out together, the code of a proxy at rest takes a few hundred pages.
//! - lld skips names in the file that the binary lacks (after a change of
//!   compiler or dependency), so a stale file costs memory, not the build.
//!   `link/update-symbol-order.sh` rewrites the file.
//! - Packed relative relocations (DT_RELR, glibc 2.36 or newer) shrink the
//!   table the loader reads at start from about 470 KiB to a few KiB.

use std::path::Path;
use std::process::Command;

/// First Rust release that links x86_64 Linux binaries with rust-lld by default.
const LLD_BY_DEFAULT: (u32, u32) = (1, 90);

fn main() {
    let order_file = Path::new("link/symbol-order.txt");
    println!("cargo:rerun-if-changed={}", order_file.display());
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");

    if !links_with_default_lld() || std::env::var("PROFILE").as_deref() != Ok("release") {
        return;
    }

    let order_file = std::fs::canonicalize(order_file).expect("link/symbol-order.txt is part of the crate");
    println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", order_file.display());
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}

/// Reports whether this build links with the lld that rustc ships. That
/// is the case on x86_64 Linux with glibc and Rust 1.90 or newer, unless the
/// environment or the flags choose another linker.
fn links_with_default_lld() -> bool {
    if std::env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") {
        return false;
    }
    if std::env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some() {
        return false;
    }

    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let chooses_linker = flags
        .split('\x1f')
        .any(|flag| flag.contains("linker") || flag.contains("link-self-contained") || flag.contains("fuse-ld"));
    if chooses_linker {
        return false;
    }

    rustc_version().is_some_and(|version| version >= LLD_BY_DEFAULT)
}

/// Reads the (major, minor) version of the compiler that cargo runs.
fn rustc_version() -> Option<(u32, u32)> {
    let rustc = std::env::var_os("RUSTC")?;
    let output = Command::new(rustc).arg("--version").output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let mut numbers = text.split_whitespace().nth(1)?.split('.');
    let major = numbers.next()?.parse().ok()?;
    let minor = numbers.next()?.parse().ok()?;
    Some((major, minor))
}
