//! The memory limit of one plugin instance, over all its linear memories.
//!
//! wasmtime's `StoreLimits::memory_size` caps each linear memory on its own,
//! and a component may have several (one per core module, or a module with
//! several memories). [`MemoryBudget`] sums them, so the plugin's
//! `memory_mib` caps the instance as a whole.

use wasmtime::{ResourceLimiter, StoreLimits};

/// The text of a refused growth; the call is then reported as over its
/// memory limit (wasmtime's own `trap_on_grow_failure` error says the same).
pub const GROWTH_REFUSED: &str = "forcing trap when growing memory";

/// Why a memory growth was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "{GROWTH_REFUSED}: the instance's memories would total {total} bytes, over its limit of {limit} bytes"
)]
pub struct OverBudget {
    /// Bytes all memories would hold after the growth.
    pub total: usize,
    /// The limit.
    pub limit: usize,
}

/// Per-store limits: wasmtime's [`StoreLimits`] plus a cap on the sum of
/// the instance's linear memories.
pub struct MemoryBudget {
    limits: StoreLimits,
    limit: usize,
    used: usize,
}

impl MemoryBudget {
    /// `limits` for each resource, and at most `limit` bytes of linear
    /// memory in total.
    pub fn new(limits: StoreLimits, limit: usize) -> Self {
        MemoryBudget {
            limits,
            limit,
            used: 0,
        }
    }

    /// Bytes of linear memory the instance holds.
    pub fn used(&self) -> usize {
        self.used
    }
}

impl ResourceLimiter for MemoryBudget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.limit {
            return Err(wasmtime::Error::new(OverBudget {
                total,
                limit: self.limit,
            }));
        }
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.used = total;
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::StoreLimitsBuilder;

    /// Two memories of 10 MiB each under a 16 MiB limit: each alone is
    /// within `StoreLimits::memory_size`, together they are refused.
    #[test]
    fn the_limit_applies_to_all_memories_together() {
        const MIB: usize = 1 << 20;
        let per_memory = StoreLimitsBuilder::new()
            .memory_size(16 * MIB)
            .trap_on_grow_failure(true)
            .build();
        let mut budget = MemoryBudget::new(per_memory, 16 * MIB);
        assert!(budget.memory_growing(0, 10 * MIB, None).unwrap());
        assert_eq!(budget.used(), 10 * MIB);
        let e = budget.memory_growing(0, 10 * MIB, None).unwrap_err();
        assert!(e.to_string().contains(GROWTH_REFUSED), "{e}");
        // The first memory may still grow within what is left.
        assert!(budget.memory_growing(10 * MIB, 16 * MIB, None).unwrap());
        assert_eq!(budget.used(), 16 * MIB);
    }
}
