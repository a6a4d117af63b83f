//! `quiver-server print-config`: defaults, then the TOML file, then environment variables
//! and flags, each overriding the one before; a file with an unknown key is refused.

use std::process::Command;

fn print_config(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quiver-server"));
    command.args(args).arg("print-config");
    for var in [
        "QUIVER_CONFIG",
        "QUIVER_NODE_ID",
        "QUIVER_DATA_DIR",
        "QUIVER_QUIC_ADDR",
        "QUIVER_INBOX_RETENTION_SECS",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    command.output().expect("quiver-server runs")
}

fn value(output: &std::process::Output) -> toml::Table {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .parse()
        .expect("TOML")
}

#[test]
fn file_then_environment_then_flags() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("quiver.toml");
    std::fs::write(
        &file,
        "node_id = \"from-file\"\nquic_addr = \"127.0.0.1:5000\"\n\
         [limits]\nmessages_per_sec = 42\npush_window = 64\n\
         [inbox]\nretention_secs = 86400\n",
    )?;
    let path = file.to_str().expect("utf-8 path");

    let defaults = value(&print_config(&[], &[]));
    assert_eq!(defaults["node_id"].as_str(), Some("local"));
    assert_eq!(
        defaults["limits"]["messages_per_sec"].as_integer(),
        Some(500)
    );

    assert_eq!(
        defaults["inbox"]["retention_secs"].as_integer(),
        Some(30 * 24 * 3600)
    );

    let from_file = value(&print_config(&["--config", path], &[]));
    assert_eq!(from_file["node_id"].as_str(), Some("from-file"));
    assert_eq!(
        from_file["inbox"]["retention_secs"].as_integer(),
        Some(86400)
    );
    assert_eq!(from_file["quic_addr"].as_str(), Some("127.0.0.1:5000"));
    assert_eq!(from_file["limits"]["push_window"].as_integer(), Some(64));
    assert_eq!(
        from_file["limits"]["max_frame_bytes"].as_integer(),
        Some(65536),
        "default kept"
    );

    let env = [
        ("QUIVER_NODE_ID", "from-env"),
        ("QUIVER_INBOX_RETENTION_SECS", "0"),
    ];
    let overridden = value(&print_config(
        &["--config", path, "--messages-per-sec", "7"],
        &env,
    ));
    assert_eq!(overridden["node_id"].as_str(), Some("from-env"));
    assert_eq!(overridden["inbox"]["retention_secs"].as_integer(), Some(0));
    assert_eq!(
        overridden["limits"]["messages_per_sec"].as_integer(),
        Some(7)
    );
    assert_eq!(overridden["limits"]["push_window"].as_integer(), Some(64));

    // What print-config prints is itself a configuration file that gives the same result.
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, toml::to_string(&overridden)?)?;
    let again = value(&print_config(
        &["--config", printed.to_str().expect("utf-8")],
        &[],
    ));
    assert_eq!(again, overridden);
    Ok(())
}

#[test]
fn a_bad_file_or_flag_combination_is_refused_with_a_reason() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("typo.toml");
    std::fs::write(&file, "[limits]\nmessages_per_second = 5\n")?;
    let output = print_config(&["--config", file.to_str().expect("utf-8")], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("messages_per_second"), "{stderr}");

    let output = print_config(&["--mesh-addr", "127.0.0.1:5431"], &[]);
    assert!(!output.status.success(), "mesh address without Redis");
    let output = print_config(&["--node-id", "Not A DNS Name"], &[]);
    assert!(
        !output.status.success(),
        "node id that cannot be a DNS name"
    );
    Ok(())
}
