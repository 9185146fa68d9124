mod train_common;
use train_common::{final_weights, make_model, step_losses, train, write_config};
#[test]
fn det() {
    let tmp = tempfile::tempdir().unwrap();
    let model = make_model(tmp.path());
    for kernels in ["kernels: {mode: fused, attention: flash, recompute: true}", "kernels: {mode: fused}", "kernels: {mode: composed, recompute: true}", "kernels: {mode: composed}"] {
        let name = format!("s{}", kernels.len());
        let cfg = write_config(tmp.path(), &model, &name, 8, kernels);
        assert!(train(&cfg, &[]).status.success());
        let ck = tmp.path().join(&name).join("checkpoints/step-00000004");
        let name2 = format!("r{}", kernels.len());
        let cfg2 = write_config(tmp.path(), &model, &name2, 8, kernels);
        let out = train(&cfg2, &["--resume", ck.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let a = final_weights(&tmp.path().join(&name), 8);
        let b = final_weights(&tmp.path().join(&name2), 8);
        if a != b { let keep = std::path::Path::new("/tmp/detkeep"); let _ = std::fs::create_dir_all(keep); std::fs::write(keep.join("a.safetensors"), &a).unwrap(); std::fs::write(keep.join("b.safetensors"), &b).unwrap(); }
        eprintln!("{kernels}: resumed weights equal {}, losses {:?} {:?}", a == b, step_losses(&tmp.path().join(&name))[4..].to_vec(), step_losses(&tmp.path().join(&name2)));
    }
}
