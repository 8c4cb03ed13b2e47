//! The tool table: interns tool names to [`ToolId`]s once, so events carry
//! a 4-byte id instead of a string, and span exports can name the tool.
//! Only interning and name look-ups take the lock; the hot path never does.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::event::ToolId;

/// Tool names and their ids, shared by the engine, its handlers and its
/// span exporter. Ids are dense and never reused.
///
/// # Examples
///
/// ```
/// use toolplane_core::ToolTable;
///
/// let tools = ToolTable::default();
/// let echo = tools.intern("echo");
/// assert_eq!(tools.intern("echo"), echo);
/// assert_eq!(tools.get("echo"), Some(echo));
/// assert_eq!(tools.name(echo).as_deref(), Some("echo"));
/// assert_eq!(tools.get("nope"), None);
/// ```
#[derive(Debug, Default)]
pub struct ToolTable {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_name: HashMap<Arc<str>, ToolId>,
    names: Vec<Arc<str>>,
}

impl ToolTable {
    /// The id of `name`, assigning the next one if it is new.
    pub fn intern(&self, name: &str) -> ToolId {
        if let Some(id) = self.get(name) {
            return id;
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&id) = inner.by_name.get(name) {
            return id;
        }
        let id = ToolId(u32::try_from(inner.names.len()).expect("fewer than 2^32 tool names"));
        let name: Arc<str> = Arc::from(name);
        inner.names.push(name.clone());
        inner.by_name.insert(name, id);
        id
    }

    /// The id of `name`, if it was interned.
    pub fn get(&self, name: &str) -> Option<ToolId> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.by_name.get(name).copied()
    }

    /// The name of `id`, if it was assigned.
    pub fn name(&self, id: ToolId) -> Option<Arc<str>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.names.get(id.0 as usize).cloned()
    }

    /// How many names are interned.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .names
            .len()
    }

    /// Whether no name is interned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
