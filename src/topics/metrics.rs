//! Held-out evaluation: accuracy, per-label precision / recall / F1, macro-F1 and the
//! confusion matrix (rows: true label, columns: predicted).
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelScores {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Held-out examples whose true label this is.
    pub support: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub examples: u64,
    pub accuracy: f64,
    /// Mean F1 over the labels that occur as truth or prediction (scikit-learn's macro
    /// average); a label never predicted correctly counts 0.
    pub macro_f1: f64,
    pub per_label: Vec<LabelScores>,
    /// `confusion[t][p]`: examples of true label `t` predicted as `p`.
    pub confusion: Vec<Vec<u64>>,
}

/// Scores `(truth, predicted)` label indices into `labels.len()` labels.
pub fn evaluate(labels: &[String], pairs: &[(usize, usize)]) -> Evaluation {
    let k = labels.len();
    let mut confusion = vec![vec![0u64; k]; k];
    for &(t, p) in pairs {
        confusion[t][p] += 1;
    }
    let correct: u64 = (0..k).map(|i| confusion[i][i]).sum();
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let mut per_label = Vec::with_capacity(k);
    let mut f1_sum = 0.0;
    let mut present = 0;
    for (i, label) in labels.iter().enumerate() {
        let support: u64 = confusion[i].iter().sum();
        let predicted: u64 = confusion.iter().map(|row| row[i]).sum();
        let (precision, recall) = (ratio(confusion[i][i], predicted), ratio(confusion[i][i], support));
        let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
        if support + predicted > 0 {
            f1_sum += f1;
            present += 1;
        }
        per_label.push(LabelScores { label: label.clone(), precision, recall, f1, support });
    }
    Evaluation {
        examples: pairs.len() as u64,
        accuracy: ratio(correct, pairs.len() as u64),
        macro_f1: if present == 0 { 0.0 } else { f1_sum / present as f64 },
        per_label,
        confusion,
    }
}

impl Evaluation {
    /// The report printed after training and by `cpt topics eval`.
    pub fn render(&self) -> String {
        let mut out = format!(
            "held-out examples {} | accuracy {:.4} | macro-F1 {:.4}\n",
            self.examples, self.accuracy, self.macro_f1
        );
        let width = self.per_label.iter().map(|l| l.label.chars().count()).max().unwrap_or(5).max(5);
        out.push_str(&format!("{:<width$}  precision  recall     f1  support\n", "topic"));
        for l in &self.per_label {
            out.push_str(&format!(
                "{:<width$}  {:>9.4}  {:>6.4}  {:>5.4}  {:>7}\n",
                l.label, l.precision, l.recall, l.f1, l.support
            ));
        }
        out.push_str("confusion matrix (rows: true topic, columns: predicted, in the order above)\n");
        let cell = self.confusion.iter().flatten().map(|c| c.to_string().len()).max().unwrap_or(1).max(2);
        for (l, row) in self.per_label.iter().zip(&self.confusion) {
            let cells: Vec<String> = row.iter().map(|c| format!("{c:>cell$}")).collect();
            out.push_str(&format!("{:<width$}  {}\n", l.label, cells.join(" ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_a_small_confusion_by_hand() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        // truth a: a a b; truth b: b c; truth c: none; predicted c once.
        let pairs = [(0, 0), (0, 0), (0, 1), (1, 1), (1, 2)];
        let e = evaluate(&labels, &pairs);
        assert_eq!(e.confusion, vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 0]]);
        assert!((e.accuracy - 0.6).abs() < 1e-12);
        let (a, b, c) = (&e.per_label[0], &e.per_label[1], &e.per_label[2]);
        assert!((a.precision - 1.0).abs() < 1e-12 && (a.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((b.precision - 0.5).abs() < 1e-12 && (b.recall - 0.5).abs() < 1e-12);
        assert_eq!((c.precision, c.recall, c.f1, c.support), (0.0, 0.0, 0.0, 0));
        // sklearn: f1_score(y, p, average="macro") over labels a, b, c (c was predicted).
        let want = (0.8 + 0.5 + 0.0) / 3.0;
        assert!((e.macro_f1 - want).abs() < 1e-12, "{}", e.macro_f1);
        assert!(e.render().contains("accuracy 0.6000"));
    }
}
