//! Which batch a callback goes to: one per organization this task handles, and
//! one for apps nobody claims (when this task keeps them).

use std::collections::HashMap;

/// Which batch a callback goes to, by its app.
#[derive(Debug, Clone)]
pub struct Routing {
    /// App → batch index; None for an organization another task handles.
    apps: HashMap<String, Option<usize>>,
    /// Where callbacks of unknown apps (and unreadable lines) go, if this task keeps them.
    unrouted: Option<usize>,
    pub(super) batches: usize,
    multi: bool,
    /// Keep each message's whole timeline instead of its status alone.
    pub(super) timelines: bool,
}

impl Routing {
    /// The same routing, keeping timelines (`Batch::timelines`) instead of statuses.
    pub fn with_timelines(mut self) -> Self {
        self.timelines = true;
        self
    }

    /// Everything to one target, whatever the app.
    pub fn single() -> Self {
        Routing {
            apps: HashMap::new(),
            unrouted: Some(0),
            batches: 1,
            multi: false,
            timelines: false,
        }
    }

    /// `orgs[i]` = (its apps, whether this task handles it); batch i is org i's,
    /// and the last batch collects unknown apps when `keep_unrouted`.
    pub fn organizations(orgs: &[(Vec<String>, bool)], keep_unrouted: bool) -> Self {
        let mut apps = HashMap::new();
        let mut index = 0;
        for (names, mine) in orgs {
            let slot = mine.then(|| {
                index += 1;
                index - 1
            });
            for name in names {
                apps.insert(name.clone(), slot);
            }
        }
        let unrouted = keep_unrouted.then_some(index);
        Routing {
            apps,
            unrouted,
            batches: index + usize::from(keep_unrouted),
            multi: true,
            timelines: false,
        }
    }

    pub(super) fn route(&self, app: Option<&str>) -> Option<usize> {
        if !self.multi {
            return Some(0);
        }
        match app.and_then(|a| self.apps.get(a)) {
            Some(slot) => *slot,
            None => self.unrouted,
        }
    }

    pub(super) fn is_unrouted(&self, index: usize) -> bool {
        self.multi && self.unrouted == Some(index)
    }
}
