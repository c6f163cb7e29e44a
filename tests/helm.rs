//! The Helm chart (helm/forcebridge): rendered with helm/render (Go text/template + sprig, no
//! helm binary needed), every manifest validated against the Kubernetes schemas
//! (kubernetes-validate), and every rendered config accepted by this build's
//! `forcebridge check --offline`. The work is in helm/check.py; this test supplies the binary.
//!
//! Needs `go` with Debian's sprig sources (golang-go, golang-github-masterminds-sprig-dev) and
//! the Python package kubernetes-validate; scripts/test.sh installs them. Without them the test
//! says SKIPPED, and fails under `CI`.

use std::path::Path;
use std::process::Command;

fn missing_tools() -> Vec<&'static str> {
    let mut missing = Vec::new();
    if Command::new("go")
        .arg("version")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        missing.push("go (apt-get install golang-go)");
    }
    let gopath = std::env::var("GOPATH").unwrap_or_default();
    let sprig = |root: &str| {
        Path::new(root)
            .join("src/github.com/Masterminds/sprig")
            .is_dir()
    };
    if !sprig("/usr/share/gocode") && !gopath.split(':').any(sprig) {
        missing.push("sprig (apt-get install golang-github-masterminds-sprig-dev)");
    }
    let python = Command::new("python3")
        .args(["-c", "import kubernetes_validate, yaml"])
        .output();
    if python.map(|o| !o.status.success()).unwrap_or(true) {
        missing.push("kubernetes-validate (pip install kubernetes-validate)");
    }
    missing
}

#[test]
fn chart_renders_validates_and_its_configs_pass_forcebridge_check() {
    let missing = missing_tools();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but the chart check tools are missing: {missing:?} (scripts/test.sh installs them)"
        );
        eprintln!("SKIPPED: the chart checks need {missing:?}; scripts/test.sh installs them");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(root.join("helm/check.py"))
        .args(["--forcebridge", env!("CARGO_BIN_EXE_forcebridge")])
        .output()
        .expect("run helm/check.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "helm/check.py failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("chart checks passed"), "{stdout}");
}
