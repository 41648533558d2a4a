//! Fee answers from what blocks actually paid: the tip each included transaction paid above
//! the base fee, weighted by the gas it used. `eth_feeHistory`'s rewards are percentiles of a
//! block's tips weighted by gas (as geth computes them); `eth_maxPriorityFeePerGas` and
//! `eth_gasPrice` follow geth's gas price oracle: the cheapest few tips of each recent block,
//! a percentile of those samples, within a floor and a cap. Pure functions: the backend
//! supplies the paid tips.

/// What one included transaction paid above the base fee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaidTip {
    /// Wei per gas above the base fee.
    pub tip: u128,
    pub gas_used: u64,
}

/// The tips at `percentiles` (ascending, 0–100) of one block, each the tip of the transaction
/// in which the cumulative gas (tips ascending) first reaches that share of the block's gas.
/// An empty block rewards nothing (zeroes), as in geth.
pub fn rewards(tips: &[PaidTip], percentiles: &[f64]) -> Vec<u128> {
    if tips.is_empty() {
        return vec![0; percentiles.len()];
    }
    let mut sorted = tips.to_vec();
    sorted.sort_by_key(|t| t.tip);
    let block_gas: u64 = sorted
        .iter()
        .map(|t| t.gas_used)
        .fold(0, u64::saturating_add);
    let mut index = 0;
    let mut cumulative = sorted[0].gas_used;
    percentiles
        .iter()
        .map(|p| {
            // A percentile is within 0..=100 (checked by the caller), so this fits.
            let threshold = (block_gas as f64 * p / 100.0) as u64;
            while cumulative < threshold && index + 1 < sorted.len() {
                index += 1;
                cumulative = cumulative.saturating_add(sorted[index].gas_used);
            }
            sorted[index].tip
        })
        .collect()
}

/// geth's gas price oracle with its defaults: from each of the last [`Self::blocks`] blocks
/// the [`Self::samples_per_block`] lowest tips of at least [`Self::ignore_below`], then the
/// [`Self::percentile`]-th of all samples, at most [`Self::max_tip`]. Without any sample (an
/// idle chain) the suggestion is [`Self::idle_tip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GasPriceOracle {
    pub blocks: u64,
    pub samples_per_block: usize,
    pub percentile: usize,
    pub ignore_below: u128,
    pub max_tip: u128,
    pub idle_tip: u128,
}

const GWEI: u128 = 1_000_000_000;

impl Default for GasPriceOracle {
    fn default() -> Self {
        Self {
            blocks: 20,
            samples_per_block: 3,
            percentile: 60,
            ignore_below: 2,
            max_tip: 500 * GWEI,
            idle_tip: GWEI,
        }
    }
}

impl GasPriceOracle {
    /// The suggested tip from the paid tips of recent blocks (any order).
    pub fn suggest<'a>(&self, blocks: impl IntoIterator<Item = &'a [PaidTip]>) -> u128 {
        let mut samples: Vec<u128> = Vec::new();
        for block in blocks {
            let mut tips: Vec<u128> = block
                .iter()
                .map(|t| t.tip)
                .filter(|&tip| tip >= self.ignore_below)
                .collect();
            tips.sort_unstable();
            samples.extend(tips.into_iter().take(self.samples_per_block));
        }
        if samples.is_empty() {
            return self.idle_tip;
        }
        samples.sort_unstable();
        let at = (samples.len() - 1) * self.percentile.min(100) / 100;
        samples[at].min(self.max_tip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paid(tip: u128, gas_used: u64) -> PaidTip {
        PaidTip { tip, gas_used }
    }

    #[test]
    fn rewards_weight_tips_by_gas() {
        // Tips 1, 2, 3 with gas 10, 80, 10: the 50th percentile falls in the big one.
        let block = [paid(3, 10), paid(1, 10), paid(2, 80)];
        assert_eq!(
            rewards(&block, &[0.0, 5.0, 10.0, 11.0, 50.0, 90.0, 91.0, 100.0]),
            vec![1, 1, 1, 2, 2, 2, 3, 3]
        );
        assert_eq!(rewards(&[], &[10.0, 90.0]), vec![0, 0]);
        assert_eq!(rewards(&block, &[]), Vec::<u128>::new());
    }

    #[test]
    fn rewards_survive_gas_that_overflows() {
        let block = [paid(7, u64::MAX), paid(5, u64::MAX)];
        let got = rewards(&block, &[0.0, 100.0]);
        assert_eq!(got[0], 5);
        assert!(got.iter().all(|tip| [5, 7].contains(tip)), "{got:?}");
    }

    #[test]
    fn the_oracle_samples_the_cheapest_tips_of_each_block() {
        let oracle = GasPriceOracle::default();
        // Each block's three cheapest tips (dust below 2 wei ignored): 10, 11, 12 and 20, 21,
        // 22; their 60th percentile ((6 - 1) * 60 / 100 = index 3) is 20.
        let a = [
            paid(1, 1),
            paid(12, 1),
            paid(10, 1),
            paid(11, 1),
            paid(99, 1),
        ];
        let b = [paid(22, 1), paid(21, 1), paid(20, 1), paid(98, 1)];
        assert_eq!(oracle.suggest([&a[..], &b[..]]), 20);
    }

    #[test]
    fn the_oracle_has_a_floor_for_idle_chains_and_a_cap() {
        let oracle = GasPriceOracle::default();
        assert_eq!(oracle.suggest([&[][..], &[][..]]), oracle.idle_tip);
        let whale = [paid(u128::MAX, 21_000)];
        assert_eq!(oracle.suggest([&whale[..]]), oracle.max_tip);
    }
}
