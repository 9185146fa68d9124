//! The MPI engine and the sharded optimiser across real processes: each test starts itself
//! under `mpiexec -n W` (needs the `mpi` feature and an MPI launcher; CI installs MPICH).
//! The copies started by mpiexec see `CPT_TEST_MPI_WORKER` and run the rank's side.
#![cfg(feature = "mpi")]

mod dist_common;

use std::process::Command;

use candle_core::{DType, Device, Tensor, Var};
use dist_common::{flat, settings};
use cpt::dist::comm::Comm;
use cpt::dist::shard::ShardLayout;
use cpt::dist::zero::{all_reduce_grads, ShardGrads, ShardedOptimizer};
use cpt::dist::{Launch, ParallelConfig, World};
use cpt::train::optim::{Grads, Optimizer};

const WORKER: &str = "CPT_TEST_MPI_WORKER";

/// In the test process: runs this test under mpiexec with `ranks` processes.
/// In a worker: returns its world.
fn launch_or_world(test: &str, ranks: usize) -> Option<World> {
    if std::env::var_os(WORKER).is_some() {
        let launch = Launch::from_env().expect("launcher environment");
        return Some(World::init(launch, &Device::Cpu, &ParallelConfig::default()).expect("MPI world"));
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("mpiexec")
        .args(["-n", &ranks.to_string()])
        .arg(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(WORKER, "1")
        .output()
        .expect("running mpiexec (install MPICH: apt-get install mpich libmpich-dev)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "mpiexec -n {ranks} {test} failed:\n{text}");
    assert_eq!(text.matches("test result: ok. 1 passed").count(), ranks, "every rank ran the test:\n{text}");
    None
}

#[test]
fn collectives_sum_gather_and_broadcast_over_three_ranks() {
    let Some(world) = launch_or_world("collectives_sum_gather_and_broadcast_over_three_ranks", 3) else { return };
    let comm = world.comm();
    let (r, w) = (world.rank(), world.size());
    assert_eq!((w, comm.engine_name()), (3, "mpi"));
    let dev = Device::Cpu;

    // reduce-scatter: block b of the sum lands on rank b.
    let send: Vec<f32> = (0..3 * 4).map(|i| i as f32 + r as f32 * 100.0).collect();
    let got = comm.reduce_scatter_sum(&Tensor::from_vec(send, 12, &dev).unwrap()).unwrap().to_vec1::<f32>().unwrap();
    let expect: Vec<f32> = (0..4).map(|k| 3.0 * (r * 4 + k) as f32 + 300.0).collect();
    assert_eq!(got, expect);

    // all-gather in f32 and bf16, rank order.
    let mine = Tensor::from_vec(vec![r as f32, 0.5 + r as f32], 2, &dev).unwrap();
    assert_eq!(comm.all_gather(&mine).unwrap().to_vec1::<f32>().unwrap(), vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
    let gathered = comm.all_gather(&mine.to_dtype(DType::BF16).unwrap()).unwrap();
    assert_eq!(gathered.dtype(), DType::BF16);
    assert_eq!(gathered.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap(), vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);

    // all-reduce of a 2-D tensor keeps its shape.
    let t = Tensor::full(r as f32 + 1.0, (2, 3), &dev).unwrap();
    let s = comm.all_reduce_sum(&t).unwrap();
    assert_eq!(s.dims(), &[2, 3]);
    assert_eq!(s.to_vec2::<f32>().unwrap(), vec![vec![6.0; 3]; 2]);

    // Host values: every rank gets the same bits (added in rank order).
    let mut v = [0.1 * (r as f64 + 1.0), 1e-17 * r as f64];
    comm.sum_f64(&mut v).unwrap();
    assert_eq!(v[0].to_bits(), ((0.0 + 0.1) + 0.2 + 0.30000000000000004f64).to_bits());
    let mut m = [r as f64];
    comm.max_f64(&mut m).unwrap();
    assert_eq!(m[0], 2.0);

    // Variable-length gathers and broadcasts.
    let all = comm.all_gather_vec(&vec![r as u8; r + 1]).unwrap();
    assert_eq!(all, vec![vec![0u8], vec![1, 1], vec![2, 2, 2]]);
    let mut msg = if r == 1 { b"from rank one".to_vec() } else { Vec::new() };
    comm.broadcast_vec(&mut msg, 1).unwrap();
    assert_eq!(msg, b"from rank one");
    comm.barrier().unwrap();

    // Accounting: bytes of the ring algorithm, and time.
    let totals = comm.stats().take();
    assert!(totals.calls >= 9 && totals.bytes > 0 && totals.seconds > 0.0, "{totals:?}");
}

fn shapes() -> Vec<(String, Vec<usize>)> {
    vec![
        ("model.embed_tokens.weight".into(), vec![300, 16]),
        ("model.layers.0.input_layernorm.weight".into(), vec![16]),
        ("model.layers.0.mlp.up_proj.weight".into(), vec![40, 16]),
        ("model.layers.1.mlp.up_proj.weight".into(), vec![40, 16]),
        ("model.norm.weight".into(), vec![16]),
    ]
}

fn params() -> Vec<(String, Var)> {
    dist_common::params(&shapes(), &Device::Cpu)
}

fn grads(rank: usize, step: usize) -> Grads {
    dist_common::grads(&shapes(), &Device::Cpu, rank, step)
}

/// Two ranks of ZeRO-1 (reduce-scatter, per-shard norm, sharded AdamW with clipping,
/// all-gather) end bit-identical to one process stepping the summed gradients, and so do
/// two ranks of ZeRO-0 (all-reduce, replicated optimiser).
#[test]
fn zero1_and_zero0_over_two_ranks_match_one_process_bit_for_bit() {
    let Some(world) = launch_or_world("zero1_and_zero0_over_two_ranks_match_one_process_bit_for_bit", 2) else { return };
    let comm: &Comm = world.comm();
    let single = Comm::single();
    let (steps, lr, clip, bucket) = (5, 1e-2, 0.5, 100);

    // The reference: one process sees the sum of both ranks' gradients.
    let reference = params();
    let one_layout = ShardLayout::new(&shapes(), 1).unwrap();
    let mut one = ShardedOptimizer::new(one_layout, 0, &reference, settings()).unwrap();
    let plain_params = params();
    let mut plain = Optimizer::new(&plain_params, settings()).unwrap();
    for step in 0..steps {
        let mut sum = grads(0, step);
        sum.accumulate(grads(1, step)).unwrap();
        let mut shards = ShardGrads::new(one.layout());
        one.reduce_scatter(&single, &sum, bucket, &mut shards).unwrap();
        let mut pieces = one.piece_grads(&shards).unwrap();
        let norm = one.grad_norm(&single, &pieces).unwrap();
        pieces.clip_to(norm, clip).unwrap();
        one.step(&pieces, lr).unwrap();
        one.all_gather_into(&single, &reference, DType::F32, bucket).unwrap();
        let mut s = sum.clone();
        let n = s.global_norm().unwrap();
        s.clip_to(n, clip).unwrap();
        plain.step(&s, lr).unwrap();
    }

    let mine = params();
    let layout = ShardLayout::new(&shapes(), 2).unwrap();
    let mut sharded = ShardedOptimizer::new(layout, world.rank(), &mine, settings()).unwrap();
    let zero0_params = params();
    let mut zero0 = Optimizer::new(&zero0_params, settings()).unwrap();
    for step in 0..steps {
        let g = grads(world.rank(), step);
        let mut shards = ShardGrads::new(sharded.layout());
        sharded.reduce_scatter(comm, &g, bucket, &mut shards).unwrap();
        let mut pieces = sharded.piece_grads(&shards).unwrap();
        let norm = sharded.grad_norm(comm, &pieces).unwrap();
        pieces.clip_to(norm, clip).unwrap();
        sharded.step(&pieces, lr).unwrap();
        sharded.all_gather_into(comm, &mine, DType::F32, bucket).unwrap();

        let mut summed = all_reduce_grads(comm, &g, bucket).unwrap();
        let n = summed.global_norm().unwrap();
        summed.clip_to(n, clip).unwrap();
        zero0.step(&summed, lr).unwrap();
    }
    assert_eq!(flat(&mine), flat(&reference), "ZeRO-1 at two ranks vs one process");
    assert_eq!(flat(&zero0_params), flat(&plain_params), "ZeRO-0 at two ranks vs one process");
    // The moments too: this rank's pieces against the same elements of the reference.
    let theirs: std::collections::HashMap<String, Tensor> = one.inner().state_tensors().into_iter().collect();
    for piece in sharded.layout().rank_pieces(world.rank()) {
        let name = &sharded.layout().params[piece.param].name;
        for (key, t) in sharded.inner().state_tensors().into_iter().filter(|(k, _)| k.starts_with(&format!("{name}."))) {
            let full = theirs[&key].flatten_all().unwrap().narrow(0, piece.start, piece.len).unwrap();
            assert_eq!(t.to_vec1::<f32>().unwrap(), full.to_vec1::<f32>().unwrap(), "{key}");
        }
    }
}
