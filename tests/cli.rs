//! The `forcebridge` binary as a user runs it.

use std::process::Command;

fn forcebridge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_forcebridge"))
}

/// A misspelt key is rejected before anything starts, with the key, its line and a non-zero exit.
#[test]
fn check_rejects_an_unknown_key_naming_it() {
    let dir = std::env::temp_dir().join(format!("forcebridge-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "salesforce:\n  auth:\n    type: access_token\n    access_token: ${FB_TEST_TOKEN}\n    instance_url: https://acme.my.salesforce.com\nsource:\n  channels:\n    - name: /data/AccountChangeEvent\n  batch_sise: 50\nkafka:\n  bootstrap_servers: localhost:9092\n",
    )
    .unwrap();
    let output = forcebridge()
        .args(["check", "--config"])
        .arg(&path)
        .env("FB_TEST_TOKEN", "00Dxx!very-secret-token")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("unknown field `batch_sise`"), "{stderr}");
    assert!(stderr.contains("line 9"), "{stderr}");
    assert!(!stderr.contains("very-secret-token"), "{stderr}");

    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace("batch_sise", "batch_size"),
    )
    .unwrap();
    let output = forcebridge()
        .args(["check", "--config"])
        .arg(&path)
        .env("FB_TEST_TOKEN", "00Dxx!very-secret-token")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("configuration is valid"), "{stdout}");
    assert!(!stdout.contains("very-secret-token"));
}

/// The README's demo command completes and its summary matches the changes it made.
#[test]
fn demo_summary_matches_the_changes() {
    let output = forcebridge()
        .args([
            "demo",
            "--accounts",
            "300",
            "--contacts",
            "20",
            "--platform-events",
            "10",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // 300 creates + 150 updates + 10 in one transaction + 5 deletes + 2 undeletes.
    assert!(
        stdout.contains("salesforce.Account                    467      467  ok"),
        "{stdout}"
    );
    assert!(
        stdout.contains("salesforce.Contact                     20       20  ok"),
        "{stdout}"
    );
    assert!(
        stdout.contains("salesforce.Order_Event__e              10       10  ok"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Kafka bootstrap servers: 127.0.0.1:"),
        "{stdout}"
    );
    assert!(!stdout.contains("MISMATCH"));
}
