//! A set's members (see `crate::kind::Set`): listed as tools of their own,
//! `<set>.<tool>`, each a view of the set's loaded tool; published when the
//! set loads and again whenever its members change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::loading::Inner;
use super::snapshot::ToolEntry;
use super::types::RegistryEvent;
use crate::kind::Set;

impl Inner {
    /// Lists the members of `set` (a loaded set entry) in place of those
    /// listed before: new ones appear, changed ones are replaced, gone ones
    /// are removed. A member that cannot be listed (its name taken by
    /// another tool, a schema that does not compile) is a problem of the
    /// set's file, and is left out.
    pub(super) fn publish_members(&self, set: &Arc<ToolEntry>, tool: &Set) {
        let set_name = set.manifest.name.clone();
        // Only the set listed now publishes (not one a reload replaced).
        if !self
            .snapshot()
            .by_name(&set_name)
            .is_some_and(|e| Arc::ptr_eq(e, set))
        {
            return;
        }
        let problem_path = match &set.origin {
            crate::manifest::Origin::File(p) => p.clone(),
            crate::manifest::Origin::Builtin => format!("<builtin>/{set_name}.toml").into(),
        };
        let snap = self.snapshot();
        let mut fresh = Vec::new();
        for made in tool.members(&set.manifest) {
            let (manifest, member) = match made {
                Ok(r) => r,
                Err(u) => {
                    tracing::warn!(set = %set_name, "{}", u.why);
                    self.problem(&problem_path, u.why, Some(u.name));
                    continue;
                }
            };
            if let Some(other) = snap.by_name(&manifest.name)
                && other.set.as_deref() != Some(set_name.as_str())
            {
                let e = format!(
                    "tool {}: the name is taken by another tool; this member is not listed",
                    manifest.name
                );
                self.problem(&problem_path, e, Some(manifest.name.clone()));
                continue;
            }
            if !self.admit(&snap, &HashMap::new(), &manifest, &set.origin) {
                continue;
            }
            let manifest = Arc::new(manifest);
            fresh.push(Arc::new(ToolEntry {
                id: self.table.intern(&manifest.name),
                manifest,
                origin: set.origin.clone(),
                set: Some(set_name.clone()),
                manifest_digest: None,
                state: OnceLock::from(Ok(member)),
                ready: tokio::sync::Notify::new(),
                deferred: Mutex::new(None),
            }));
        }
        let mut events = Vec::new();
        let mut clashed = Vec::new();
        self.publish(|s| {
            let old: Vec<String> = s
                .iter()
                .filter(|e| e.set.as_deref() == Some(set_name.as_str()))
                .map(|e| e.manifest.name.clone())
                .collect();
            for name in old {
                if !fresh.iter().any(|e| e.manifest.name == name) {
                    s.remove(&name);
                    events.push(RegistryEvent::Removed { name });
                }
            }
            for e in &fresh {
                let name = e.manifest.name.clone();
                // Checked again under the lock: another set's members or a
                // file's tool may have taken the MCP name since.
                if let Some(other) = s.mcp_clash(&name) {
                    clashed.push((Arc::clone(e), other.manifest.name.clone()));
                    continue;
                }
                let event = if s.by_name(&name).is_some() {
                    RegistryEvent::Replaced { name }
                } else {
                    RegistryEvent::Listed { name }
                };
                s.insert(Arc::clone(e));
                events.push(event);
            }
        });
        for e in events {
            self.emit(e);
        }
        for (e, other) in clashed {
            self.refuse_clash(&e, &other);
        }
    }
}
