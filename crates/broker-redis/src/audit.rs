//! Compares what Redis holds for the subscribing link with what this node
//! asked for, at every probe. A difference that outlives one probe is a
//! subscription lost (or kept) without notice; the link is then replaced and
//! subscribed again from the broker's own set.

/// Probes in a row that may see a difference before the link is replaced:
/// one probe can fall between an unsolicited `sunsubscribe` (a slot moved)
/// and the re-subscribe it causes.
const TOLERATED: u8 = 1;

/// Differences seen by consecutive probes of one link.
#[derive(Debug, Default)]
pub(crate) struct Audit {
    differing: u8,
}

impl Audit {
    /// Records a probe that found Redis holding `held` subscriptions for
    /// `wanted` channels; an error says why the link must be replaced.
    pub(crate) fn check(&mut self, held: usize, wanted: usize) -> Result<(), String> {
        if held == wanted {
            self.differing = 0;
            return Ok(());
        }
        self.differing += 1;
        if self.differing > TOLERATED {
            return Err(format!(
                "Redis holds {held} subscriptions for the {wanted} channels this node needs"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_seen_by_two_probes_in_a_row_replaces_the_link() {
        let mut audit = Audit::default();
        assert_eq!(audit.check(5, 5), Ok(()));
        assert_eq!(
            audit.check(4, 5),
            Ok(()),
            "one probe may fall mid-migration"
        );
        assert_eq!(
            audit.check(4, 5),
            Err("Redis holds 4 subscriptions for the 5 channels this node needs".to_owned())
        );
    }

    #[test]
    fn a_difference_that_heals_is_forgotten() {
        let mut audit = Audit::default();
        assert_eq!(audit.check(4, 5), Ok(()));
        assert_eq!(audit.check(5, 5), Ok(()));
        assert_eq!(audit.check(6, 5), Ok(()), "a fresh count after a match");
        assert!(audit.check(6, 5).is_err(), "too many is a difference too");
    }
}
