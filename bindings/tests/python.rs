//! The Python bindings, tested from Python: starts a real node, generates `quiver_ffi.py`
//! with this package's `uniffi-bindgen` from the built library (the README's command),
//! and runs the pytest suite in `bindings/python/tests` against the node. Needs
//! `python3` with pytest (`.ci/run` installs it).

use anyhow::{ensure, Context};
use quiver_tests::TestNode;
use std::path::Path;
use std::process::Command;

/// The built library's file name on this platform.
fn library_name() -> &'static str {
    if cfg!(target_os = "macos") {
        "libquiver_ffi.dylib"
    } else {
        "libquiver_ffi.so"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_bindings_pass_their_pytest_suite() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let out = tempfile::tempdir()?;
    let bindgen = Path::new(env!("CARGO_BIN_EXE_uniffi-bindgen"));
    // `cargo test` builds the cdylib into deps/ (only `cargo build` copies it up a level).
    let dir = bindgen.parent().context("target dir")?;
    let library = [dir.join("deps"), dir.to_path_buf()]
        .into_iter()
        .map(|d| d.join(library_name()))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .context("the built library")?
        .1;
    let generated = Command::new(bindgen)
        .args(["generate", "--library"])
        .arg(&library)
        .args(["--language", "python", "--out-dir"])
        .arg(out.path())
        .output()?;
    ensure!(generated.status.success(), "uniffi-bindgen: {generated:?}");
    std::fs::copy(&library, out.path().join(library_name())).context("copying the library")?;
    let ca = out.path().join("ca.pem");
    std::fs::write(&ca, &node.ca_pem)?;

    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/tests");
    let mut pytest = Command::new("python3");
    pytest
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&tests)
        .env("PYTHONPATH", out.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("QUIVER_URL", format!("https://{}", node.node().http_addr()))
        .env("QUIVER_CA", &ca);
    // pytest blocks; the node answers on this runtime's other thread meanwhile.
    let ran = tokio::task::spawn_blocking(move || pytest.output()).await??;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    println!("{report}");
    ensure!(ran.status.success(), "pytest failed:\n{report}");
    ensure!(report.contains("6 passed"), "not every test ran:\n{report}");
    Ok(())
}
