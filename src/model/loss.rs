//! Per-token negative log-likelihood, differentiable (composed from primitives).
use anyhow::{Context, Result};
use candle_core::{DType, Tensor, D};

/// logits [B, T, V] (any float dtype), targets [B, T] u32 -> NLL [B, T] f32.
/// Reduce it as you need (mean, per-source sums, masks) before calling `backward`.
pub fn token_nll(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (b, t, v) = logits
        .dims3()
        .context("token_nll: logits must be [B, T, V]")?;
    let (tb, tt) = targets
        .dims2()
        .context("token_nll: targets must be [B, T]")?;
    anyhow::ensure!(
        (b, t) == (tb, tt),
        "token_nll: logits are [{b}, {t}, {v}] but targets are [{tb}, {tt}]"
    );
    let targets = targets.to_dtype(DType::U32)?;
    let max_id = targets
        .max_keepdim(D::Minus1)?
        .max_keepdim(0)?
        .flatten_all()?
        .to_vec1::<u32>()?;
    if let Some(&m) = max_id.first() {
        anyhow::ensure!(
            (m as usize) < v,
            "token_nll: target id {m} is outside the vocabulary ({v})"
        );
    }
    // nll = logsumexp(x) - x[target], without materialising the [B, T, V] log-softmax:
    // one shifted copy and its exp are the only vocabulary-sized intermediates.
    let x = logits.to_dtype(DType::F32)?;
    let max = x.max_keepdim(D::Minus1)?.detach();
    let lse = x
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        .add(&max)?;
    let picked = x.gather(&targets.unsqueeze(D::Minus1)?.contiguous()?, D::Minus1)?;
    Ok((lse - picked)?.squeeze(D::Minus1)?)
}

/// Mean NLL over all tokens: the usual training loss.
pub fn mean_nll(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    Ok(token_nll(logits, targets)?.mean_all()?)
}
