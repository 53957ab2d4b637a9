//! The floating-point environment kernels run in: subnormal numbers are
//! flushed to zero, as TensorFlow and XLA run their CPU kernels (their
//! thread pools and executors set the same two flags for every op).
//!
//! Training makes subnormals as a matter of course: Nadam's first moment of
//! a weight whose gradient is zero (a dead ReLU's) shrinks by 0.9 a step
//! and spends about 150 steps below `f32::MIN_POSITIVE` on its way to zero.
//! At the end of one epoch of the seed CNN, 87,000 state values were
//! subnormal. An x86 core computes on them through a microcode assist of a
//! hundred cycles or more per instruction, and the loop slowed down as they
//! appeared. With the flags set, a subnormal input reads as zero (DAZ) and
//! a subnormal result is written as zero (FTZ).
//!
//! [`Flushing`] sets both for the thread it lives on and restores what was
//! there when it goes; the executor holds one while it runs a kernel, and
//! each worker of its team holds one for its life. Every thread of a run
//! computes alike, so results stay the same at any thread count.

/// MXCSR's "denormals are zeros" bit.
#[cfg(target_arch = "x86_64")]
const DAZ: u32 = 1 << 6;
/// MXCSR's "flush to zero" bit.
#[cfg(target_arch = "x86_64")]
const FTZ: u32 = 1 << 15;

/// While alive, this thread flushes subnormal inputs and results to zero.
pub struct Flushing {
    /// The control word to restore, when this guard changed it.
    #[cfg(target_arch = "x86_64")]
    restore: Option<u32>,
}

impl Flushing {
    /// Sets the flags on this thread (a no-op where they were set already,
    /// and on targets other than x86-64, whose kernels keep subnormals).
    pub fn new() -> Flushing {
        #[cfg(target_arch = "x86_64")]
        {
            let before = control_word();
            let wanted = before | DAZ | FTZ;
            if wanted == before {
                return Flushing { restore: None };
            }
            set_control_word(wanted);
            Flushing {
                restore: Some(before),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Flushing {}
    }

    /// Whether this thread flushes subnormals to zero now.
    pub fn active() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            control_word() & (DAZ | FTZ) == DAZ | FTZ
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }
}

impl Default for Flushing {
    fn default() -> Flushing {
        Flushing::new()
    }
}

impl Drop for Flushing {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        if let Some(before) = self.restore {
            set_control_word(before);
        }
    }
}

/// This thread's MXCSR.
#[cfg(target_arch = "x86_64")]
fn control_word() -> u32 {
    let mut word = 0u32;
    // SAFETY: `stmxcsr` stores four bytes to a valid, aligned `u32`.
    unsafe {
        std::arch::asm!(
            "stmxcsr [{}]",
            in(reg) &mut word,
            options(nostack, preserves_flags)
        )
    };
    word
}

/// Sets this thread's MXCSR to `word` (from [`control_word`], with flag
/// bits changed, so no reserved bit is set).
#[cfg(target_arch = "x86_64")]
fn set_control_word(word: u32) {
    // SAFETY: `ldmxcsr` loads four bytes from a valid `u32`; the word
    // differs from the current one only in DAZ and FTZ, which every
    // x86-64 core with SSE2 supports.
    unsafe {
        std::arch::asm!(
            "ldmxcsr [{}]",
            in(reg) &word,
            options(nostack, readonly, preserves_flags)
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A subnormal f32, and its product by a half (subnormal too).
    fn subnormal_product() -> (f32, f32) {
        let tiny = std::hint::black_box(f32::MIN_POSITIVE / 4.0);
        let half = std::hint::black_box(0.5f32);
        (tiny, tiny * half)
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn subnormals_flush_while_the_guard_lives_and_come_back_after() {
        let (tiny, product) = subnormal_product();
        assert!(tiny > 0.0 && product > 0.0, "no flushing before");
        {
            let _flushing = Flushing::new();
            assert!(Flushing::active());
            let (tiny, product) = subnormal_product();
            // DAZ: a subnormal input reads as zero; FTZ: a subnormal
            // result is written as zero.
            assert_eq!(tiny * 1.0, 0.0);
            assert_eq!(std::hint::black_box(f32::MIN_POSITIVE) * 0.5, 0.0);
            assert_eq!(product, 0.0);
            {
                let _again = Flushing::new();
                assert!(Flushing::active());
            }
            assert!(Flushing::active(), "a nested guard restores nothing");
        }
        assert!(!Flushing::active());
        let (_, product) = subnormal_product();
        assert!(product > 0.0, "restored");
    }
}
