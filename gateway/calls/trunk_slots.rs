//! Per-trunk call slots: `[[trunk]] max_calls` caps one trunk's calls, in
//! and out, so one trunk cannot take every slot of the gateway.

use super::core::Core;

impl Core {
    /// Whether trunk `t` has no call slot free (its `max_calls` reached);
    /// counted when so.
    pub(super) fn trunk_full(&self, t: usize) -> bool {
        let Some(trunk) = self.config.trunks.get(t) else {
            return false;
        };
        let full = self.trunk_calls.get(&trunk.name).copied().unwrap_or(0) >= trunk.max_calls;
        if full {
            self.metrics.calls_over_trunk_limit.inc();
        }
        full
    }

    /// Takes a call slot on trunk `t` (checked free with
    /// [`Core::trunk_full`] just before); its name, to free it by.
    pub(super) fn take_trunk_slot(&mut self, t: usize) -> Option<String> {
        let name = self.config.trunks.get(t)?.name.clone();
        *self.trunk_calls.entry(name.clone()).or_default() += 1;
        Some(name)
    }

    pub(super) fn free_trunk_slot(&mut self, name: &str) {
        if let Some(n) = self.trunk_calls.get_mut(name) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.trunk_calls.remove(name);
            }
        }
    }
}
