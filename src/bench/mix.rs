//! The load's operations and their shares (`--mix get=90,set=10`).
//!
//! Kept apart from the workers that run them: parsing and printing a mix is
//! pure, tested on its own, and shared by the CLI's flag parsing.

/// An operation of the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    // In the order of OP_KINDS: `index` relies on it.
    /// Read one key.
    Get,
    /// Write one key.
    Set,
    /// Read a window of [`RANGE_WINDOW`] consecutive keys (v1).
    Range,
    /// Read `batch_size` keys in one call (v1).
    Batch,
    /// Compare-and-set one key on its revision (v1).
    Txn,
}

pub(super) const OP_KINDS: [OpKind; 5] = [
    OpKind::Get,
    OpKind::Set,
    OpKind::Range,
    OpKind::Batch,
    OpKind::Txn,
];

impl OpKind {
    /// The place of this kind in [`OP_KINDS`], a [`Mix`] and `by_kind`.
    pub(super) fn index(self) -> usize {
        self as usize
    }

    pub(super) fn plural(self) -> &'static str {
        match self {
            OpKind::Batch => "batches",
            OpKind::Get => "gets",
            OpKind::Set => "sets",
            OpKind::Range => "ranges",
            OpKind::Txn => "txns",
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Set => "set",
            OpKind::Range => "range",
            OpKind::Batch => "batch",
            OpKind::Txn => "txn",
        }
    }
}

/// Keys one Range reads.
pub const RANGE_WINDOW: usize = 10;

/// The share of each operation, in percent, adding up to 100.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix([u32; 5]);

impl Mix {
    /// Parses `get=90,set=10`: each operation at most once, and the shares
    /// add up to exactly 100. No share is filled in to make up the rest:
    /// `get=50` would quietly run as many sets as gets.
    pub fn parse(text: &str) -> Result<Mix, String> {
        let mut shares: [Option<u32>; 5] = [None; 5];
        for part in text.split(',') {
            let (op, share) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected op=percent, e.g. get=90"))?;
            let share: u32 = share
                .trim()
                .parse()
                .ok()
                .filter(|share| *share <= 100)
                .ok_or_else(|| {
                    format!("{part:?}: the share must be a whole percentage, 0 to 100")
                })?;
            let op = op.trim();
            let index = OP_KINDS
                .iter()
                .position(|kind| kind.name() == op)
                .ok_or_else(|| {
                    format!("unknown operation {op:?} (use get, set, range, batch, txn)")
                })?;
            if shares[index].replace(share).is_some() {
                return Err(format!("{op} is given more than once"));
            }
        }
        let mix = Mix(shares.map(|share| share.unwrap_or(0)));
        let total: u32 = mix.0.iter().sum();
        if total != 100 {
            return Err(format!(
                "the shares add up to {total}, not 100 (e.g. get=90,set=10)"
            ));
        }
        Ok(mix)
    }

    /// The share of `kind`.
    pub fn share(&self, kind: OpKind) -> u32 {
        self.0[kind.index()]
    }

    /// The operation for a roll in `0..100`.
    pub(super) fn pick(&self, roll: u32) -> OpKind {
        let mut below = 0;
        for (kind, share) in OP_KINDS.iter().zip(self.0) {
            below += share;
            if roll < below {
                return *kind;
            }
        }
        OpKind::Get
    }

    /// Whether the tutorial API can run this mix (only get and set).
    pub fn tutorial_only(&self) -> bool {
        self.share(OpKind::Range) + self.share(OpKind::Batch) + self.share(OpKind::Txn) == 0
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = OP_KINDS
            .iter()
            .zip(self.0)
            .filter(|(_, share)| *share > 0)
            .map(|(kind, share)| format!("{}={share}", kind.name()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_names_every_share() {
        let mix = Mix::parse("get=90, set=10").unwrap();
        assert_eq!((mix.share(OpKind::Get), mix.share(OpKind::Set)), (90, 10));
        let mix = Mix::parse("set=100").unwrap();
        assert_eq!((mix.share(OpKind::Get), mix.share(OpKind::Set)), (0, 100));
        let mix = Mix::parse("get=40,range=30,batch=20,txn=10,set=0").unwrap();
        assert_eq!(mix.to_string(), "get=40,range=30,batch=20,txn=10");
    }

    #[test]
    fn shares_that_do_not_add_up_to_100_are_refused() {
        for (text, total) in [("get=50", 50), ("get=90,set=20", 110), ("set=0", 0)] {
            let error = Mix::parse(text).unwrap_err();
            assert!(
                error.starts_with(&format!("the shares add up to {total}, not 100")),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn an_operation_given_twice_is_refused() {
        for text in ["get=100,get=0", "get=50,set=0,get=50"] {
            assert_eq!(
                Mix::parse(text).unwrap_err(),
                "get is given more than once",
                "{text}"
            );
        }
    }

    #[test]
    fn a_share_is_a_percentage() {
        // Shares above 100 would overflow the sum into 100 again.
        for text in [
            "get=4294967295,set=101",
            "get=101",
            "get=-1,set=101",
            "get=x",
        ] {
            let error = Mix::parse(text).unwrap_err();
            assert!(
                error.contains("whole percentage, 0 to 100"),
                "{text}: {error}"
            );
        }
    }
}
