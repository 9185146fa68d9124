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
    check_target_ids(&targets, v)?;
    let x = logits.to_dtype(DType::F32)?;
    if x.device().is_cpu() {
        // The same f32 operations as `token_nll_composed` in one op: the same bits with a
        // fraction of the memory traffic (`kernels::token_nll`).
        return Ok(crate::kernels::token_nll::token_nll_cpu(&x, &targets)?);
    }
    token_nll_composed(&x, &targets)
}

/// [`token_nll`] for rows of logits: `[N, V]` and targets `[N]` -> NLL `[N]` f32. The
/// language-model head's `[N, V]` logits go in as they come from its matmul, so the backward
/// has no `[B, T, V]` reshape to pass the gradient through.
pub fn token_nll_rows(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (n, v) = logits.dims2().context("token_nll: logits must be [N, V]")?;
    anyhow::ensure!(targets.dims() == [n], "token_nll: logits are [{n}, {v}] but targets are {:?}", targets.dims());
    let targets = targets.to_dtype(DType::U32)?;
    check_target_ids(&targets, v)?;
    let x = logits.to_dtype(DType::F32)?;
    if x.device().is_cpu() {
        return Ok(crate::kernels::token_nll::token_nll_cpu(&x, &targets)?);
    }
    Ok(token_nll_composed(&x.unsqueeze(0)?, &targets.unsqueeze(0)?)?.squeeze(0)?)
}

fn check_target_ids(targets: &Tensor, v: usize) -> Result<()> {
    if let Some(m) = targets.flatten_all()?.max_keepdim(0)?.to_vec1::<u32>()?.first() {
        anyhow::ensure!((*m as usize) < v, "token_nll: target id {m} is outside the vocabulary ({v})");
    }
    Ok(())
}

/// [`token_nll`] composed from candle primitives (any device), without the checks: f32
/// logits `[B, T, V]`, u32 targets `[B, T]` inside the vocabulary.
pub fn token_nll_composed(x: &Tensor, targets: &Tensor) -> Result<Tensor> {
    // nll = logsumexp(x) - x[target], without materialising the [B, T, V] log-softmax:
    // one shifted copy and its exp are the only vocabulary-sized intermediates.
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
