//! Structural checks of the top-level Dockerfile and .dockerignore. No Docker engine runs where
//! the tests run, so the image itself is built in CI elsewhere; these checks catch the mistakes
//! that a build would not: a root user, a secret baked in, a binary path that is not the Cargo
//! binary, a missing stage.

use std::path::Path;

struct Instruction {
    line: usize,
    keyword: String,
    args: String,
}

/// Instructions with continuation lines joined; comments and blank lines dropped.
fn parse(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if pending.is_none() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if pending.is_some() && trimmed.starts_with('#') {
            continue;
        }
        let (line, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                acc.push_str(part);
                acc.push(' ');
                pending = Some((line, acc));
            }
            None => {
                acc.push_str(trimmed);
                let (keyword, args) = acc.split_once(char::is_whitespace).unwrap_or((&acc, ""));
                out.push(Instruction {
                    line,
                    keyword: keyword.to_ascii_uppercase(),
                    args: args.trim().to_owned(),
                });
            }
        }
    }
    assert!(
        pending.is_none(),
        "the Dockerfile ends inside a continued line"
    );
    out
}

fn cargo_bin_name() -> String {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let bin = manifest
        .split("[[bin]]")
        .nth(1)
        .expect("Cargo.toml has a [[bin]]");
    let name = bin
        .lines()
        .find_map(|l| l.trim().strip_prefix("name = "))
        .expect("[[bin]] has a name");
    name.trim_matches('"').to_owned()
}

fn dockerfile() -> Vec<Instruction> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile");
    parse(&std::fs::read_to_string(path).expect("a top-level Dockerfile"))
}

/// The problems found; empty when the Dockerfile is fine.
#[allow(
    clippy::too_many_lines,
    reason = "a list of independent rules, each a few lines"
)]
fn lint(instructions: &[Instruction], bin: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let stages: Vec<&Instruction> = instructions
        .iter()
        .filter(|i| i.keyword == "FROM")
        .collect();
    if stages.len() < 2 {
        problems.push(format!(
            "{} stage(s): expected a builder and a runtime stage",
            stages.len()
        ));
        return problems;
    }
    let builder_alias = stages[0]
        .args
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[0].eq_ignore_ascii_case("AS"))
        .map(|w| w[1].to_owned());
    let Some(builder_alias) = builder_alias else {
        problems.push("the builder stage has no `AS <name>`".into());
        return problems;
    };
    if !stages[0].args.starts_with("rust:") {
        problems.push(format!(
            "the builder is not a rust image: {}",
            stages[0].args
        ));
    }
    for stage in &stages {
        let image = stage.args.split_whitespace().next().unwrap_or("");
        if !image.contains(':') || image.ends_with(":latest") {
            problems.push(format!(
                "line {}: image {image} is not pinned to a tag",
                stage.line
            ));
        }
    }
    let runtime_start = instructions
        .iter()
        .rposition(|i| i.keyword == "FROM")
        .unwrap();
    let (build, runtime) = instructions.split_at(runtime_start);

    // The builder builds exactly the Cargo binary, reproducibly.
    let builds_bin = |segment: &str| {
        let tokens: Vec<&str> = segment.split_whitespace().collect();
        tokens.starts_with(&["cargo", "build"])
            && tokens.contains(&"--release")
            && tokens.contains(&"--locked")
            && tokens.windows(2).any(|w| w == ["--bin", bin])
    };
    if !build
        .iter()
        .any(|i| i.keyword == "RUN" && i.args.split("&&").any(builds_bin))
    {
        problems.push(format!(
            "no `cargo build --release --locked --bin {bin}` in the builder"
        ));
    }
    // The runtime stage holds only the binary, copied from the builder.
    let copies: Vec<&Instruction> = runtime
        .iter()
        .filter(|i| matches!(i.keyword.as_str(), "COPY" | "ADD"))
        .collect();
    if copies.len() != 1
        || !copies[0]
            .args
            .starts_with(&format!("--from={builder_alias} "))
    {
        problems.push(
            "the runtime stage must copy exactly one thing: the binary from the builder".into(),
        );
    }
    if let Some(copy) = copies.first() {
        let parts: Vec<&str> = copy.args.split_whitespace().collect();
        let (src, dst) = (parts[parts.len() - 2], parts[parts.len() - 1]);
        let built_to = build.iter().filter(|i| i.keyword == "RUN").any(|i| {
            i.args.contains(&format!("target/release/{bin} {src}"))
                || src == format!("/src/target/release/{bin}")
        });
        if !built_to {
            problems.push(format!(
                "the copied {src} is not where the builder put target/release/{bin}"
            ));
        }
        if Path::new(dst).file_name().and_then(|f| f.to_str()) != Some(bin) {
            problems.push(format!("the binary is installed as {dst}, not as {bin}"));
        }
    }
    // Non-root.
    match runtime.iter().rfind(|i| i.keyword == "USER") {
        None => problems.push("the runtime stage sets no USER (it would run as root)".into()),
        Some(user) => {
            let name = user.args.split(':').next().unwrap_or("");
            if matches!(name, "root" | "0") {
                problems.push(format!("line {}: USER {} is root", user.line, user.args));
            } else if name != "65532" && name != "nonroot" {
                problems.push(format!(
                    "line {}: USER {} is not 65532 (the chart's runAsUser)",
                    user.line, user.args
                ));
            }
        }
    }
    let entrypoint = runtime
        .iter()
        .rfind(|i| i.keyword == "ENTRYPOINT")
        .map(|i| i.args.as_str());
    if entrypoint != Some(&format!("[\"{bin}\"]")) {
        problems.push(format!(
            "ENTRYPOINT is {entrypoint:?}, expected [\"{bin}\"]"
        ));
    }
    let cmd = runtime
        .iter()
        .rfind(|i| i.keyword == "CMD")
        .map(|i| i.args.as_str());
    if cmd != Some(r#"["run", "--config", "/etc/forcebridge/forcebridge.yaml"]"#) {
        problems.push(format!("CMD is {cmd:?}, expected the chart's config path"));
    }
    if !runtime
        .iter()
        .any(|i| i.keyword == "EXPOSE" && i.args.split_whitespace().any(|p| p == "9464"))
    {
        problems.push("the metrics port 9464 is not exposed".into());
    }
    // No secrets in any layer or in the image's environment.
    let secret = secret_scan(instructions);
    problems.extend(secret);
    problems
}

fn secret_scan(instructions: &[Instruction]) -> Vec<String> {
    const WORDS: [&str; 6] = [
        "SECRET",
        "PASSWORD",
        "TOKEN",
        "PRIVATE",
        "SF_CLIENT",
        "KAFKA_USER",
    ];
    let mut problems = Vec::new();
    for i in instructions {
        let upper = i.args.to_ascii_uppercase();
        if matches!(i.keyword.as_str(), "ENV" | "ARG" | "LABEL")
            && WORDS.iter().any(|w| upper.contains(w))
        {
            problems.push(format!(
                "line {}: {} {} looks like a secret",
                i.line, i.keyword, i.args
            ));
        }
        if matches!(i.keyword.as_str(), "COPY" | "ADD")
            && [".pem", ".key", ".env", "forcebridge.yaml"]
                .iter()
                .any(|s| i.args.contains(s))
        {
            problems.push(format!(
                "line {}: {} {} copies a secret or a config",
                i.line, i.keyword, i.args
            ));
        }
    }
    problems
}

#[test]
fn dockerfile_is_multi_stage_non_root_and_ships_the_cargo_binary() {
    let problems = lint(&dockerfile(), &cargo_bin_name());
    assert!(
        problems.is_empty(),
        "Dockerfile problems:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_lint_catches_what_it_is_for() {
    let good =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    let bin = cargo_bin_name();
    let broken = [
        ("root user", good.replace("USER 65532:65532", "USER root")),
        ("no user", good.replace("USER 65532:65532", "")),
        (
            "secret env",
            good.replace("EXPOSE 9464", "ENV SF_CLIENT_SECRET=abc\nEXPOSE 9464"),
        ),
        (
            "wrong binary",
            good.replace("--bin forcebridge", "--bin forcebridge-sim"),
        ),
        (
            "renamed binary",
            good.replace("/usr/local/bin/forcebridge", "/usr/local/bin/fb"),
        ),
        (
            "single stage",
            good.split("# ---- runtime").next().unwrap().to_owned(),
        ),
        (
            "config baked in",
            good.replace(
                "USER 65532",
                "COPY forcebridge.yaml /etc/forcebridge/\nUSER 65532",
            ),
        ),
        (
            "latest tag",
            good.replace("cc-debian12:nonroot", "cc-debian12:latest"),
        ),
    ];
    for (what, text) in broken {
        assert!(
            !lint(&parse(&text), &bin).is_empty(),
            "the lint missed: {what}"
        );
    }
}

#[test]
fn dockerignore_keeps_secrets_and_build_output_out_of_the_context() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".dockerignore"))
        .expect("a top-level .dockerignore");
    let entries: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in [
        "target",
        ".git",
        "*.pem",
        "*.key",
        ".env",
        "forcebridge.yaml",
    ] {
        assert!(entries.contains(&needed), ".dockerignore lacks {needed}");
    }
    // What the build copies must not be ignored.
    for used in [
        "src",
        "proto",
        "schemas",
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
    ] {
        assert!(
            !entries.contains(&used),
            ".dockerignore drops {used}, which the build copies"
        );
    }
}
