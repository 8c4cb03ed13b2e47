//! What the registry lists: each tool's entry and load state, and the
//! snapshot of every entry at one moment (what workers and listings read).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use toolplane_tool::names::Names;

use toolplane_core::{Outcome, ToolId};

use crate::error::LoadError;
use crate::kind::Tool;
use crate::manifest::{Manifest, Origin};

/// A tool's load state.
#[derive(Debug, Clone)]
pub enum LoadState {
    /// Being compiled or loaded.
    Loading,
    /// Callable.
    Ready,
    /// Could not be loaded.
    Failed(Arc<LoadError>),
    /// Loaded, and failing: a process tool whose processes keep failing
    /// (the reason); its calls fail at once until one starts and answers.
    Down(Arc<str>),
}

/// Two failures are equal when they say the same.
impl PartialEq for LoadState {
    fn eq(&self, other: &LoadState) -> bool {
        match (self, other) {
            (LoadState::Loading, LoadState::Loading) | (LoadState::Ready, LoadState::Ready) => true,
            (LoadState::Down(a), LoadState::Down(b)) => a == b,
            (LoadState::Failed(a), LoadState::Failed(b)) => {
                Arc::ptr_eq(a, b) || a.to_string() == b.to_string()
            }
            _ => false,
        }
    }
}

/// How a tool's load ended: the tool to call, or why there is none
/// (shared by every caller that waited on it).
pub type Loaded = Result<Tool, Arc<LoadError>>;

/// One listed tool.
pub struct ToolEntry {
    /// The engine's id for the tool.
    pub id: ToolId,
    /// Its manifest.
    pub manifest: Arc<Manifest>,
    /// Where it came from.
    pub origin: Origin,
    /// The set it is a member of (`<set>.<tool>`), if it is one.
    pub set: Option<String>,
    /// The SHA-256 of its manifest file (none for a built-in).
    pub(super) manifest_digest: Option<[u8; 32]>,
    pub(super) state: OnceLock<Loaded>,
    pub(super) ready: tokio::sync::Notify,
    /// The load an on-demand registry has not started yet: the first
    /// [`ToolEntry::wait`] starts it.
    pub(super) deferred: Mutex<Option<Deferred>>,
}

/// A load left for the first caller (see
/// the registry builder's `on_demand`): what hands it to the loaders.
pub(super) type Deferred = Box<dyn FnOnce() + Send>;

impl std::fmt::Debug for ToolEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolEntry")
            .field("name", &self.manifest.name)
            .field("origin", &self.origin)
            .field("state", &self.state())
            .finish()
    }
}

impl ToolEntry {
    /// Whether this entry is a set of tools (listed for its state; its
    /// members are what callers call), not one tool.
    pub fn is_set(&self) -> bool {
        self.set.is_none() && self.manifest.is_set()
    }

    /// The load state (`Loading` too for a tool of an on-demand registry
    /// that no one has called yet).
    pub fn state(&self) -> LoadState {
        match self.state.get() {
            None => LoadState::Loading,
            Some(Ok(tool)) => match tool.down() {
                Some(why) => LoadState::Down(why),
                None => LoadState::Ready,
            },
            Some(Err(e)) => LoadState::Failed(Arc::clone(e)),
        }
    }

    /// The loaded tool, when loading is over.
    pub fn loaded(&self) -> Option<&Loaded> {
        self.state.get()
    }

    /// Waits until loading is over (starting it, for an on-demand
    /// registry's tool not loaded yet).
    pub async fn wait(&self) -> &Loaded {
        if let Some(s) = self.state.get() {
            return s;
        }
        self.start_deferred();
        loop {
            let notified = self.ready.notified();
            if let Some(s) = self.state.get() {
                return s;
            }
            notified.await;
        }
    }

    /// Waits until loading is over, then checks `input` against the tool's
    /// schema: the tool to call, or the outcome that ends the call before
    /// any instance exists.
    pub(crate) async fn ready_for(&self, input: &[u8]) -> Result<Tool, Outcome> {
        let tool = match self.wait().await {
            Ok(t) => t.clone(),
            Err(reason) => return Err(reason.outcome(&self.manifest.name)),
        };
        tool.check_input(input)
            .map_err(|e| Outcome::Error(e.into()))?;
        Ok(tool)
    }

    pub(super) fn finish(&self, result: Loaded) {
        let _ = self.state.set(result);
        self.ready.notify_waiters();
    }

    /// No longer listed (replaced by a new version, or removed): a
    /// process tool stops its processes once their calls are answered. A
    /// worker may still hold the old listing until its next call, and with
    /// it this tool: that must not keep its processes running.
    pub(super) fn retire(&self) {
        if let Some(Ok(tool)) = self.state.get() {
            tool.retire();
        }
    }

    /// Hands a deferred load to the loaders; once.
    fn start_deferred(&self) {
        let taken = self
            .deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(start) = taken {
            start();
        }
    }
}

/// The tools listed at one moment, by [`ToolId`], by name and by the name
/// MCP clients see ([`toolplane_tool::names`]).
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    by_id: Vec<Option<Arc<ToolEntry>>>,
    by_name: BTreeMap<String, ToolId>,
    by_mcp: HashMap<String, ToolId>,
    names: Arc<Names>,
}

impl Snapshot {
    /// An empty listing that names tools by `names`.
    pub(super) fn new(names: Arc<Names>) -> Snapshot {
        Snapshot {
            names,
            ..Snapshot::default()
        }
    }

    /// The registry's naming policy.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The name MCP clients see for `entry`.
    pub fn mcp_name<'a>(&self, entry: &'a ToolEntry) -> Cow<'a, str> {
        self.names.mcp_name(&entry.manifest.name)
    }

    /// The tool with this name, or with this MCP name.
    pub fn by_either(&self, name: &str) -> Option<&Arc<ToolEntry>> {
        self.by_name(name)
            .or_else(|| self.by_mcp.get(name).and_then(|id| self.get(*id)))
    }

    /// Another tool (not `name`) listed whose MCP name is `name`'s.
    pub fn mcp_clash(&self, name: &str) -> Option<&Arc<ToolEntry>> {
        let mcp = self.names.mcp_name(name);
        self.by_mcp
            .get(mcp.as_ref())
            .and_then(|id| self.get(*id))
            .filter(|e| e.manifest.name != name)
    }

    /// The tool with this id.
    pub fn get(&self, id: ToolId) -> Option<&Arc<ToolEntry>> {
        self.by_id.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// The tool with this name.
    pub fn by_name(&self, name: &str) -> Option<&Arc<ToolEntry>> {
        self.by_name.get(name).and_then(|id| self.get(*id))
    }

    /// Every tool, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<ToolEntry>> {
        self.by_name.values().filter_map(|id| self.get(*id))
    }

    /// The tools a client is offered (`tools/list`, `/v1/tools`): every
    /// entry but the sets, whose members are listed instead.
    pub fn callable(&self) -> usize {
        self.iter().filter(|e| !e.is_set()).count()
    }

    /// The sets (an MCP server, a jsonl worker with `[[tools]]`) not yet
    /// loaded: their members are not listed yet.
    pub fn sets_loading(&self) -> usize {
        self.iter()
            .filter(|e| e.is_set() && e.loaded().is_none())
            .count()
    }

    /// How many entries are listed: tools and sets (see
    /// [`Snapshot::callable`] for what a client is offered).
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no tool is listed.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub(super) fn insert(&mut self, entry: Arc<ToolEntry>) {
        let i = entry.id.0 as usize;
        if self.by_id.len() <= i {
            self.by_id.resize(i + 1, None);
        }
        self.by_name.insert(entry.manifest.name.clone(), entry.id);
        // The first tool keeps an MCP name (callers check `mcp_clash`
        // before they list another).
        self.by_mcp
            .entry(self.names.mcp_name(&entry.manifest.name).into_owned())
            .or_insert(entry.id);
        self.by_id[i] = Some(entry);
    }

    pub(super) fn remove(&mut self, name: &str) -> Option<Arc<ToolEntry>> {
        let id = self.by_name.remove(name)?;
        let mcp = self.names.mcp_name(name);
        if self.by_mcp.get(mcp.as_ref()) == Some(&id) {
            self.by_mcp.remove(mcp.as_ref());
        }
        self.by_id.get_mut(id.0 as usize).and_then(Option::take)
    }
}
