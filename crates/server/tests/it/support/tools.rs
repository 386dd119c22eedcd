//! Third-party tools the tests drive, installed by the tests themselves
//! from the language registries under `target/`, pinned by a file.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub fn install_root() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("interop")
}

/// Installs with `install` into a scratch folder, then moves it into place,
/// so an interrupted install is never mistaken for a finished one. A stamp
/// holding the pin file's text triggers a reinstall when the pin changes.
pub fn ensure_installed(
    pins_dir: &Path,
    name: &str,
    pin_file: &str,
    install: impl FnOnce(&Path) -> std::process::Command,
) -> PathBuf {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap();
    let pins = std::fs::read_to_string(pins_dir.join(pin_file)).unwrap();
    let dir = install_root().join(name);
    let stamp = dir.join(".wshub-pins");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(pins.as_str()) {
        return dir;
    }
    let scratch = install_root().join(format!("{name}.partial"));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let status = install(&scratch)
        .status()
        .unwrap_or_else(|err| panic!("cannot run the {name} installer: {err}"));
    assert!(
        status.success(),
        "installing the pinned {name} peer failed: {status}"
    );
    std::fs::write(scratch.join(".wshub-pins"), &pins).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&scratch, &dir).unwrap();
    dir
}

/// The packages pinned in `pins_dir/pin_file`, installed from PyPI with pip
/// into their own folder under target/ (for `PYTHONPATH`, or its `bin/`).
pub fn pip_installed(pins_dir: &Path, name: &str, pin_file: &str) -> PathBuf {
    let pins = pins_dir.join(pin_file);
    ensure_installed(pins_dir, name, pin_file, |dir| {
        let mut cmd = std::process::Command::new("python3");
        cmd.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--root-user-action=ignore",
            "--target",
        ])
        .arg(dir)
        .arg("-r")
        .arg(pins);
        cmd
    })
}
