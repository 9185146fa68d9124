//! Python's `random.Random(seed).sample(population, k)` (CPython 3.8-3.13), which
//! lm-evaluation-harness' default few-shot sampler calls once per evaluated document with
//! `fewshot_random_seed` 1234: the same Mersenne Twister, seeded through `init_by_array`,
//! the same `_randbelow` (rejection on `getrandbits`) and the same two selection methods.
use rand_mt::Mt as Mt19937GenRand32;

pub struct PyRandom(Mt19937GenRand32);

impl PyRandom {
    /// `random.Random(seed)` for a seed below 2^32 (one 32-bit key word).
    pub fn new(seed: u32) -> Self {
        Self(Mt19937GenRand32::new_with_key([seed]))
    }

    /// `getrandbits(k)` for 0 < k <= 32.
    fn getrandbits(&mut self, k: u32) -> u32 {
        self.0.next_u32() >> (32 - k)
    }

    /// `_randbelow_with_getrandbits(n)` for 0 < n < 2^32.
    fn randbelow(&mut self, n: usize) -> usize {
        let k = usize::BITS - n.leading_zeros();
        loop {
            let r = self.getrandbits(k) as usize;
            if r < n {
                return r;
            }
        }
    }

    /// The indices `random.sample(range(n), k)` picks, in order.
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        assert!(k <= n, "sample larger than population");
        let mut setsize = 21usize;
        if k > 5 {
            // 4 ** ceil(log(k * 3, 4))
            setsize += 4usize.pow(((k * 3) as f64).log(4.0).ceil() as u32);
        }
        let mut result = Vec::with_capacity(k);
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = self.randbelow(n - i);
                result.push(pool[j]);
                pool[j] = pool[n - i - 1];
            }
        } else {
            let mut selected = std::collections::HashSet::new();
            for _ in 0..k {
                let mut j = self.randbelow(n);
                while selected.contains(&j) {
                    j = self.randbelow(n);
                }
                selected.insert(j);
                result.push(j);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_cpython() {
        // python3 -c "import random; r = random.Random(1234); print(r.sample(range(100), 5), r.sample(range(10), 3))"
        let mut r = PyRandom::new(1234);
        assert_eq!(r.sample(100, 5), vec![99, 56, 14, 0, 11]);
        assert_eq!(r.sample(10, 3), vec![9, 0, 1]);
    }
}
