//! Link options for the release binary when rustc links with its own lld,
//! as rustup's Rust 1.90 and newer do for x86_64 Linux.
//!
//! - `link/symbol-order.txt` puts the functions the proxy runs from start to
//!   rest side by side at the front of `.text`, then those it runs per
//!   request, then those only a config of 1,000 clusters and routes runs. The kernel maps code in 64 KiB runs around each page fault, so
//!   code spread over the whole binary keeps most of `.text` resident. Laid
//!   out together, the code of a proxy at rest takes a few hundred pages.
//! - The names in the file carry hashes that depend on the compiler version
//!   and the dependencies, so lld skips those the binary lacks. A stale file
//!   costs memory, not the build, and a warning names a compiler other than
//!   the one in `link/symbol-order.rustc`. `link/update-symbol-order.sh`
//!   rewrites both files.
//! - Packed relative relocations (DT_RELR) shrink the table the loader reads
//!   at start from about 470 KiB to a few KiB. The binary then needs glibc
//!   2.36 or newer, so they are used only when the glibc it links against is
//!   that recent.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

const ORDER_FILE: &str = "link/symbol-order.txt";
const ORDER_RUSTC_FILE: &str = "link/symbol-order.rustc";

/// First glibc that reads packed relative relocations.
const RELR_GLIBC: (u32, u32) = (2, 36);

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-changed={ORDER_RUSTC_FILE}");

    if std::env::var("PROFILE").as_deref() != Ok("release") || !links_with_rust_lld() {
        return;
    }

    let order_file = std::fs::canonicalize(ORDER_FILE).expect("link/symbol-order.txt is part of the crate");
    link_arg("--symbol-ordering-file");
    link_arg(&order_file.display().to_string());
    link_arg("--no-warn-symbol-ordering");
    warn_if_order_is_stale();

    if glibc_reads_relr() {
        link_arg("-z");
        link_arg("pack-relative-relocs");
    }
}

/// Passes one argument to the linker through the compiler driver.
fn link_arg(argument: &str) {
    println!("cargo:rustc-link-arg-bins=-Xlinker");
    println!("cargo:rustc-link-arg-bins={argument}");
}

/// Reports whether rustc links this crate's binaries with its own lld. A
/// distribution's rustc, a linker set in `.cargo/config.toml` or a cross
/// build may each pick another linker. So this links a stub program with
/// the same target, linker and flags, and reads the command rustc prints.
fn links_with_rust_lld() -> bool {
    let Some(command) = stub_link_command() else {
        return false;
    };

    let chooses_lld = command.contains("-fuse-ld=lld") && command.contains("gcc-ld");
    let other_linkers = command.matches("-fuse-ld=").count() > command.matches("-fuse-ld=lld").count();
    chooses_lld && !other_linkers && !command.contains("--ld-path")
}

/// Links an empty program as this crate's binaries would be linked and
/// returns the linker command that rustc printed.
fn stub_link_command() -> Option<String> {
    let rustc = std::env::var_os("RUSTC")?;
    let target = std::env::var("TARGET").ok()?;
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR")?);
    let source = out_dir.join("link_probe.rs");
    std::fs::write(&source, "fn main() {}\n").ok()?;

    let mut probe = Command::new(rustc);
    probe.args(["--print", "link-args", "--crate-type", "bin", "--target", &target, "-o"]);
    probe.arg(out_dir.join("link_probe")).arg(&source);
    if let Some(linker) = std::env::var_os("RUSTC_LINKER") {
        let mut choice = OsString::from("linker=");
        choice.push(linker);
        probe.arg("-C").arg(choice);
    }
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    probe.args(flags.split('\x1f').filter(|flag| !flag.is_empty()));

    let output = probe.output().ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8(output.stdout).ok()
}

/// Warns when the order file was written with another compiler, whose
/// symbol hashes the binary does not share.
fn warn_if_order_is_stale() {
    let recorded = std::fs::read_to_string(ORDER_RUSTC_FILE).unwrap_or_default();
    let current = rustc_version().unwrap_or_default();
    let (recorded, current) = (recorded.trim(), current.trim());
    if recorded != current {
        println!(
            "cargo:warning=link/symbol-order.txt was written with `{recorded}`, this build uses `{current}`: most of its names \
             will not match, so the proxy keeps more of its code resident; run crates/legate/link/update-symbol-order.sh"
        );
    }
}

/// Returns the output of `rustc --version` for the compiler cargo runs.
fn rustc_version() -> Option<String> {
    let output = Command::new(std::env::var_os("RUSTC")?).arg("--version").output().ok()?;
    String::from_utf8(output.stdout).ok()
}

/// Reports whether the glibc the binary links against reads packed relative
/// relocations. That takes a native build (no cross build) against glibc,
/// linked dynamically, on a machine whose glibc is recent enough.
fn glibc_reads_relr() -> bool {
    if std::env::var("HOST").ok() != std::env::var("TARGET").ok() {
        return false;
    }
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    if features.split(',').any(|feature| feature == "crt-static") {
        return false;
    }
    if std::env::var("CARGO_CFG_TARGET_ENV").as_deref() != Ok("gnu") {
        return false;
    }

    glibc_version().is_some_and(|version| version >= RELR_GLIBC)
}

/// Reads the (major, minor) version of the machine's glibc from `getconf`.
fn glibc_version() -> Option<(u32, u32)> {
    let output = Command::new("getconf").arg("GNU_LIBC_VERSION").output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let mut numbers = text.split_whitespace().nth(1)?.split('.');
    let major = numbers.next()?.parse().ok()?;
    let minor = numbers.next()?.parse().ok()?;
    Some((major, minor))
}
