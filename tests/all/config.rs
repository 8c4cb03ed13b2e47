//! Configuration: defaults, TOML, environment overrides and aliases, and
//! a clear error for every invalid key.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use toolplane_core::{BuildError, Config, ConfigError, Engine, Outcome, handler_fn};

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn defaults_serve() {
    let c = Config::default();
    assert_eq!(c.max_inflight, 2048);
    assert_eq!(c.batch_size, 64);
    assert_eq!(c.queue_watermark, 0.75);
    assert_eq!(c.sample_every, 100);
    assert_eq!(c.max_concurrent_per_worker, 256);
    assert!(c.pin_workers);
    assert_eq!(
        c.resolved_workers(),
        std::thread::available_parallelism().unwrap().get()
    );
}

#[test]
fn environment_overrides_and_aliases() {
    let c = Config::default()
        .with_env_from(env(&[
            ("TOOLPLANE_WORKERS", "3"),
            ("MCP_MAX_INFLIGHT", "100"),
            ("MCP_BATCH_SIZE", "16"),
            ("TOOLPLANE_BATCH_SIZE", "32"),
            ("MCP_QUEUE_WATERMARK", "0.5"),
            ("TOOLPLANE_RING_CAPACITY", "64"),
            ("TOOLPLANE_SAMPLE_EVERY", "0"),
            ("TOOLPLANE_CALL_TIMEOUT", "250ms"),
        ]))
        .unwrap();
    assert_eq!(c.workers, Some(3));
    assert_eq!(c.max_inflight, 100, "MCP_ alias");
    assert_eq!(c.batch_size, 32, "TOOLPLANE_ wins over its MCP_ alias");
    assert_eq!(c.queue_watermark, 0.5);
    assert_eq!(c.ring_capacity, 64);
    assert_eq!(c.sample_every, 0);
    assert_eq!(c.call_timeout, Some(Duration::from_millis(250)));
}

#[test]
fn a_toml_file_then_the_environment() {
    let dir = std::env::temp_dir().join(format!("toolplane-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("engine.toml");
    std::fs::write(&path, "workers = 2\nbatch_size = 8\nidle_spin = \"10us\"\n").unwrap();
    let c = Config::from_file(&path)
        .unwrap()
        .with_env_from(env(&[("TOOLPLANE_WORKERS", "1")]))
        .unwrap();
    assert_eq!(c.workers, Some(1));
    assert_eq!(c.batch_size, 8);
    assert_eq!(c.idle_spin, Duration::from_micros(10));
    let engine = Engine::builder()
        .config(c)
        .pin_workers(false)
        .build(handler_fn(|_| Outcome::Cancelled))
        .unwrap();
    assert_eq!(engine.workers(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every key, given a bad value in a file and in the environment: the
/// error names the key, the value, where it came from and what is
/// accepted.
#[test]
fn every_invalid_key_has_a_clear_error() {
    let cases: &[(&str, &str, &str, &str)] = &[
        ("workers", "0", "TOOLPLANE_WORKERS", "1..=1024"),
        ("workers", "5000", "TOOLPLANE_WORKERS", "1..=1024"),
        ("max_inflight", "0", "MCP_MAX_INFLIGHT", "1..=16777216"),
        ("batch_size", "0", "TOOLPLANE_BATCH_SIZE", "1..=65536"),
        (
            "queue_watermark",
            "1.5",
            "MCP_QUEUE_WATERMARK",
            "at most 1.0",
        ),
        (
            "queue_watermark",
            "0",
            "TOOLPLANE_QUEUE_WATERMARK",
            "greater than 0.0",
        ),
        (
            "ring_capacity",
            "1",
            "TOOLPLANE_RING_CAPACITY",
            "2..=1048576",
        ),
        (
            "sample_every",
            "2000000000",
            "TOOLPLANE_SAMPLE_EVERY",
            "0..=1000000000",
        ),
        (
            "max_concurrent_per_worker",
            "0",
            "TOOLPLANE_MAX_CONCURRENT_PER_WORKER",
            "1..=1048576",
        ),
    ];
    for &(key, value, var, accepted) in cases {
        let toml = format!("{key} = {value}\n");
        let err = Config::from_toml_str(&toml, Path::new("bad.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, ConfigError::Invalid { key: k, .. } if k == key),
            "{msg}"
        );
        for needle in [key, value, "bad.toml", accepted] {
            assert!(msg.contains(needle), "{key}: {msg:?} lacks {needle:?}");
        }
        let err = Config::default()
            .with_env_from(env(&[(var, value)]))
            .unwrap_err()
            .to_string();
        for needle in [key, value, var, accepted] {
            assert!(err.contains(needle), "{var}: {err:?} lacks {needle:?}");
        }
    }
    // Values that do not parse at all, from the environment.
    for (var, value, key) in [
        ("TOOLPLANE_WORKERS", "many", "workers"),
        ("TOOLPLANE_PIN_WORKERS", "maybe", "pin_workers"),
        ("TOOLPLANE_IDLE_SPIN", "soon", "idle_spin"),
        ("TOOLPLANE_CALL_TIMEOUT", "forever", "call_timeout"),
        ("MCP_QUEUE_WATERMARK", "high", "queue_watermark"),
    ] {
        let err = Config::default()
            .with_env_from(env(&[(var, value)]))
            .unwrap_err()
            .to_string();
        for needle in [key, value, var] {
            assert!(err.contains(needle), "{var}: {err:?} lacks {needle:?}");
        }
    }
    // Durations out of range, from a file.
    for (toml, key) in [
        ("idle_spin = \"2s\"", "idle_spin"),
        ("call_timeout = \"2h\"", "call_timeout"),
    ] {
        let err = Config::from_toml_str(toml, Path::new("d.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key) && err.contains("d.toml"), "{err}");
    }
    // Set in code: caught at build time, naming the key.
    let err = Engine::builder()
        .batch_size(0)
        .build(handler_fn(|_| Outcome::Cancelled))
        .unwrap_err();
    assert!(matches!(err, BuildError::Config(_)));
    let msg = err.to_string();
    assert!(
        msg.contains("batch_size") && msg.contains("set in code"),
        "{msg}"
    );
}

#[test]
fn unknown_keys_bad_types_and_missing_files_are_named() {
    let err = Config::from_toml_str("max_infligth = 5\n", Path::new("typo.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("typo.toml") && err.contains("max_infligth"),
        "{err}"
    );
    let err = Config::from_toml_str("batch_size = \"lots\"\n", Path::new("t.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("t.toml") && err.contains("batch_size"),
        "{err}"
    );
    let err = Config::from_toml_str("idle_spin = \"fast\"\n", Path::new("t.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("idle_spin") && err.contains("fast"), "{err}");
    let err = Config::from_file("/nonexistent/toolplane.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/toolplane.toml"), "{err}");
}

#[test]
fn a_bad_span_export_path_fails_the_build_naming_it() {
    let err = Engine::builder()
        .pin_workers(false)
        .config(Config {
            span_export: Some("/nonexistent/dir/spans.jsonl".into()),
            ..Config::default()
        })
        .build(handler_fn(|_| Outcome::Cancelled))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/dir/spans.jsonl") && err.contains("span_export"),
        "{err}"
    );
}
