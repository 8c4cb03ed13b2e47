//! The events of a profile: which tool, which payload, which key and
//! priority, drawn from the profile's seeded distributions. Payloads are
//! built once per (tool, size) before the run; per event only a keyed
//! path is formatted.

use std::io::Write as _;

use toolplane_core::{Event, Payload, Priority, ToolId};

use crate::profile::Profile;
use crate::schedule::{Rng, Weighted};

const KEY_MARK: &str = "@@KEY@@";

#[derive(Debug)]
enum Body {
    /// The same bytes every time.
    Fixed(Vec<u8>),
    /// `prefix`, the key (or event number), `suffix`.
    Keyed(Vec<u8>, Vec<u8>),
}

#[derive(Debug)]
struct Tool {
    id: ToolId,
    /// One body per payload size.
    bodies: Vec<Body>,
}

/// Draws events for a profile.
#[derive(Debug)]
pub struct Workload {
    tools: Vec<Tool>,
    tool_pick: Weighted,
    size_pick: Weighted,
    key_cardinality: u64,
    low_per_10k: u64,
    rng: Rng,
    scratch: Vec<u8>,
    n: u64,
}

/// A file the workload reads: created in the data directory before the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Path relative to the data directory.
    pub path: String,
    /// Its size.
    pub size: u64,
}

/// The files the profile's `fs.read` events read.
pub fn data_files(profile: &Profile) -> Vec<DataFile> {
    if !profile
        .tools
        .iter()
        .any(|t| t.payload_field.as_deref() == Some("length"))
    {
        return Vec::new();
    }
    profile
        .sizes
        .iter()
        .map(|&(size, _)| DataFile {
            path: read_path(size),
            size,
        })
        .collect()
}

fn read_path(size: u64) -> String {
    format!("loadgen/read-{size}.txt")
}

/// Text of `len` bytes drawn from `rng` (letters, so JSON needs no escapes).
fn text(rng: &mut Rng, len: u64) -> String {
    (0..len)
        .map(|_| char::from(b'a' + rng.below(26) as u8))
        .collect()
}

/// Fills a data file's bytes (deterministic for a size).
pub fn data_file_contents(size: u64) -> Vec<u8> {
    text(&mut Rng::new(size), size).into_bytes()
}

impl Workload {
    /// The workload of `profile`, with tool ids from `id_of`.
    pub fn new(profile: &Profile, mut id_of: impl FnMut(&str) -> ToolId) -> Workload {
        let mut rng = Rng::new(profile.seed);
        let tools = profile
            .tools
            .iter()
            .map(|t| {
                let bodies = profile
                    .sizes
                    .iter()
                    .map(|&(size, _)| {
                        let mut input = t.input.clone();
                        let mut keyed = false;
                        match t.payload_field.as_deref() {
                            None => {}
                            Some("length") => {
                                input.insert("length".into(), size.into());
                                input
                                    .entry("path")
                                    .or_insert_with(|| read_path(size).into());
                            }
                            Some("content") => {
                                input.insert("content".into(), text(&mut rng, size).into());
                                if !input.contains_key("path") {
                                    input.insert(
                                        "path".into(),
                                        format!("loadgen/w-{KEY_MARK}.txt").into(),
                                    );
                                    keyed = true;
                                }
                            }
                            Some(field) => {
                                input.insert(field.into(), text(&mut rng, size).into());
                            }
                        }
                        let json = serde_json::Value::Object(input).to_string();
                        match json.split_once(KEY_MARK) {
                            Some((a, b)) if keyed => {
                                Body::Keyed(a.as_bytes().to_vec(), b.as_bytes().to_vec())
                            }
                            _ => Body::Fixed(json.into_bytes()),
                        }
                    })
                    .collect();
                Tool {
                    id: id_of(&t.name),
                    bodies,
                }
            })
            .collect();
        Workload {
            tools,
            tool_pick: Weighted::new(profile.tools.iter().map(|t| t.weight)),
            size_pick: Weighted::new(profile.sizes.iter().map(|s| s.1)),
            key_cardinality: profile.key_cardinality,
            low_per_10k: (profile.low_priority_pct * 100.0).round() as u64,
            rng,
            scratch: Vec::new(),
            n: 0,
        }
    }

    /// The next event, tagged with its intended send time; and the index
    /// of its tool in the mix.
    #[inline]
    pub fn next_event(&mut self, intended_ns: u64) -> (Event, usize) {
        let rng = &mut self.rng;
        let t = self.tool_pick.pick(rng);
        let s = self.size_pick.pick(rng);
        let key = (self.key_cardinality > 0).then(|| rng.below(self.key_cardinality));
        let low = self.low_per_10k > 0 && rng.below(10_000) < self.low_per_10k;
        self.n += 1;
        let tool = &self.tools[t];
        let payload = match &tool.bodies[s] {
            Body::Fixed(b) => Payload::from_slice(b),
            Body::Keyed(a, b) => {
                self.scratch.clear();
                self.scratch.extend_from_slice(a);
                let _ = write!(self.scratch, "{}", key.unwrap_or(self.n % 1024));
                self.scratch.extend_from_slice(b);
                Payload::from_slice(&self.scratch)
            }
        };
        let mut event = Event::new(tool.id, payload).with_tag(intended_ns);
        if let Some(k) = key {
            event = event.with_key(k);
        }
        if low {
            event = event.with_priority(Priority::Low);
        }
        (event, t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn payloads_follow_the_profile() {
        let p = Profile::from_toml_str(
            r#"
seed = 7
duration = "1s"
[rate]
shape = "constant"
rate = "1k/s"
[[tools]]
name = "echo"
weight = 50
[[tools]]
name = "fs.write"
weight = 25
[[tools]]
name = "fs.read"
weight = 25
[payload]
sizes = [{ size = "16 B", weight = 50 }, { size = 100, weight = 50 }]
[keys]
cardinality = 8
[priority]
low_pct = 50
"#,
            Path::new("t.toml"),
        )
        .unwrap();
        let ids = ["echo", "fs.write", "fs.read"];
        let mut w = Workload::new(&p, |n| {
            ToolId(ids.iter().position(|x| *x == n).unwrap() as u32)
        });
        let (mut low, mut tools) = (0, [0; 3]);
        for i in 0..4000 {
            let (e, t) = w.next_event(i);
            assert_eq!(e.tag(), i);
            assert_eq!(e.tool(), ToolId(t as u32));
            tools[t] += 1;
            low += usize::from(e.priority() == Priority::Low);
            let key = e.key().expect("keyed");
            assert!(key < 8);
            let v: serde_json::Value = serde_json::from_slice(e.payload()).unwrap();
            match t {
                0 => assert!(matches!(v["data"].as_str().unwrap().len(), 16 | 100)),
                1 => {
                    assert_eq!(v["path"], format!("loadgen/w-{key}.txt"));
                    assert!(matches!(v["content"].as_str().unwrap().len(), 16 | 100));
                }
                _ => assert!(v["path"].as_str().unwrap().starts_with("loadgen/read-")),
            }
        }
        assert!((1800..2200).contains(&low), "{low}");
        assert!((1800..2200).contains(&tools[0]), "{tools:?}");
        assert_eq!(data_files(&p).len(), 2);
        assert_eq!(data_file_contents(100).len(), 100);
    }
}
