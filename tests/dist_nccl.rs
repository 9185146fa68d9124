//! The NCCL engine on a GPU (`--features nccl`; built by `scripts/cuda-toolkit.sh --tests`,
//! never by CI). Without a GPU every test prints SKIP and returns.
//!
//! 1. A world of one NCCL rank: every collective is the identity on CUDA tensors (f32 and
//!    bf16), and ZeRO-1 over NCCL steps a model on the GPU as the CPU does (within 1e-6).
//! 2. Two ranks sharing GPU 0 (this test starts itself twice with torchrun's variables and
//!    NCCL's own bootstrap): NCCL either refuses two ranks on one device with its duplicate
//!    GPU error, or the ranks' ZeRO-1 and all-reduce results match one process.
#![cfg(feature = "nccl")]

mod dist_common;

use std::process::Command;

use candle_core::{DType, Device, Tensor};
use dist_common::{flat, settings};
use cpt::dist::comm::Comm;
use cpt::dist::config::{NcclBootstrap, ParallelConfig};
use cpt::dist::shard::ShardLayout;
use cpt::dist::zero::{ShardGrads, ShardedOptimizer};
use cpt::dist::{Launch, Launcher};
use cpt::train::optim::Grads;

fn gpu() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("SKIP: no GPU ({e})");
            None
        }
    }
}

fn shapes() -> Vec<(String, Vec<usize>)> {
    vec![
        ("model.embed_tokens.weight".into(), vec![300, 16]),
        ("model.layers.0.mlp.up_proj.weight".into(), vec![40, 16]),
        ("model.norm.weight".into(), vec![16]),
    ]
}

fn grads(dev: &Device, rank: usize, step: usize) -> Grads {
    dist_common::grads(&shapes(), dev, rank, step)
}

/// `steps` ZeRO-1 steps with gradient sums `sum_of(step)`; returns the flat weights.
fn zero1(comm: &Comm, rank: usize, dev: &Device, steps: usize, my_grads: impl Fn(usize) -> Grads) -> Vec<f32> {
    let p = dist_common::params(&shapes(), dev);
    let layout = ShardLayout::new(&shapes(), comm.size()).unwrap();
    let mut opt = ShardedOptimizer::new(layout, rank, &p, settings()).unwrap();
    for step in 0..steps {
        let mut shards = ShardGrads::new(opt.layout());
        opt.reduce_scatter(comm, &my_grads(step), 1 << 20, &mut shards).unwrap();
        let mut pieces = opt.piece_grads(&shards).unwrap();
        let norm = opt.grad_norm(comm, &pieces).unwrap();
        pieces.clip_to(norm, 0.5).unwrap();
        opt.step(&pieces, 1e-2).unwrap();
        opt.all_gather_into(comm, &p, DType::F32, 1 << 20).unwrap();
    }
    flat(&p)
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn nccl_world(rank: usize, world: usize, dev: &Device, id_file: &std::path::Path) -> Comm {
    let launch = Launch {
        launcher: Launcher::Torchrun,
        rank,
        world_size: world,
        local_rank: 0,
        local_world_size: world,
        master_addr: None,
        master_port: None,
        job_key: None,
    };
    let parallel = ParallelConfig { nccl_bootstrap: NcclBootstrap::File, nccl_id_file: Some(id_file.to_path_buf()), ..Default::default() };
    cpt::dist::nccl::init(&launch, &parallel, dev).expect("NCCL communicator")
}

#[test]
fn a_world_of_one_nccl_rank_matches_the_cpu() {
    let Some(dev) = gpu() else { return };
    let dir = tempfile::tempdir().unwrap();
    let comm = nccl_world(0, 1, &dev, &dir.path().join("id"));
    assert_eq!(comm.engine_name(), "nccl");
    // `Comm` short-cuts one rank: call the engine itself, which runs NCCL.
    let engine = comm.engine();
    let t = Tensor::arange(0f32, 12.0, &dev).unwrap();
    for out in [engine.all_reduce_tensor(&t).unwrap(), engine.reduce_scatter_tensor(&t).unwrap(), engine.all_gather_tensor(&t).unwrap()] {
        assert!(out.device().is_cuda());
        assert_eq!(out.to_vec1::<f32>().unwrap(), t.to_vec1::<f32>().unwrap());
    }
    let b = t.to_dtype(DType::BF16).unwrap();
    let g = engine.all_gather_tensor(&b).unwrap();
    assert_eq!(g.dtype(), DType::BF16);
    assert_eq!(g.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap(), t.to_vec1::<f32>().unwrap());
    let mut bytes = b"nccl".to_vec();
    engine.broadcast_bytes(&mut bytes, 0).unwrap();
    assert_eq!(bytes, b"nccl");
    engine.barrier().unwrap();
    let on_gpu = zero1(&comm, 0, &dev, 4, |s| grads(&dev, 0, s));
    let cpu = Device::Cpu;
    let on_cpu = zero1(&Comm::single(), 0, &cpu, 4, |s| grads(&cpu, 0, s));
    let rel = max_rel(&on_gpu, &on_cpu);
    eprintln!("ZeRO-1 over NCCL (1 rank, GPU) vs CPU: max relative difference {rel:e}");
    assert!(rel <= 1e-6, "{rel:e}");
}

const WORKER: &str = "CPT_TEST_NCCL_WORKER";

#[test]
fn two_ranks_on_one_gpu_match_one_process_or_are_refused_by_nccl() {
    if let Ok(spec) = std::env::var(WORKER) {
        // A rank started by the test below: RANK, the id file.
        let (rank, id) = spec.split_once(':').unwrap();
        let rank: usize = rank.parse().unwrap();
        let dev = Device::new_cuda(0).unwrap();
        let comm = nccl_world(rank, 2, &dev, std::path::Path::new(id));
        let mine = zero1(&comm, rank, &dev, 3, |s| grads(&dev, rank, s));
        let cpu = Device::Cpu;
        let sum = |s: usize| {
            let mut g = grads(&cpu, 0, s);
            g.accumulate(grads(&cpu, 1, s)).unwrap();
            g
        };
        let reference = zero1(&Comm::single(), 0, &cpu, 3, sum);
        let rel = max_rel(&mine, &reference);
        println!("rank {rank}: ZeRO-1 over NCCL (2 ranks, one GPU) vs one CPU process: {rel:e}");
        assert!(rel <= 1e-6, "{rel:e}");
        return;
    }
    if gpu().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("id");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|r| {
            Command::new(&exe)
                .args(["--exact", "two_ranks_on_one_gpu_match_one_process_or_are_refused_by_nccl", "--nocapture"])
                .env(WORKER, format!("{r}:{}", id.display()))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    let text: Vec<String> =
        outs.iter().map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))).collect();
    if outs.iter().all(|o| o.status.success()) {
        eprintln!("NCCL ran two ranks on one GPU:\n{}\n{}", text[0], text[1]);
        return;
    }
    let refused = text.iter().any(|t| t.contains("invalid usage") || t.contains("InvalidUsage") || t.contains("Duplicate GPU"));
    assert!(refused, "two ranks on one GPU failed otherwise than NCCL's refusal:\n{}\n{}", text[0], text[1]);
    eprintln!("NCCL refuses two ranks on one GPU (as documented):\n{}", text.join("\n"));
}
