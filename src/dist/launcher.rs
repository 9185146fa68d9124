//! Which launcher started this process, read from the environment it sets: torchrun
//! (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, ...), Open MPI (`OMPI_COMM_WORLD_*`), MPICH's Hydra
//! (`PMI_RANK`, `PMI_SIZE`, `MPI_LOCALRANKID`, ...) or Slurm (`SLURM_PROCID`, ...). Slurm is
//! read last: an outer `srun` often leaves its variables set for an inner launcher.
use std::collections::HashMap;

use anyhow::{bail, ensure, Context, Result};

/// The launcher a process was started by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// Started directly: one process.
    None,
    Torchrun,
    OpenMpi,
    Mpich,
    Slurm,
}

impl Launcher {
    pub fn name(self) -> &'static str {
        match self {
            Launcher::None => "a single process",
            Launcher::Torchrun => "torchrun",
            Launcher::OpenMpi => "mpiexec (Open MPI)",
            Launcher::Mpich => "mpiexec (MPICH)",
            Launcher::Slurm => "srun (Slurm)",
        }
    }

    /// Whether the launcher also sets up an MPI job (so an MPI communicator spans all ranks).
    pub fn provides_mpi(self) -> bool {
        matches!(self, Launcher::OpenMpi | Launcher::Mpich | Launcher::Slurm)
    }
}

/// This process's place in the job, as the launcher describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub launcher: Launcher,
    pub rank: usize,
    pub world_size: usize,
    /// Index among the processes on this node: the GPU a rank uses (`cuda:LOCAL_RANK`).
    pub local_rank: usize,
    pub local_world_size: usize,
    /// torchrun's rendezvous address (NCCL's own bootstrap listens next to it).
    pub master_addr: Option<String>,
    pub master_port: Option<u16>,
    /// A string the launcher makes unique per job (Slurm job/step, torchrun run id and port,
    /// the PMIx namespace): tells this launch's files from a previous one's. None when the
    /// launcher gives nothing unique.
    pub job_key: Option<String>,
}

impl Launch {
    /// One process, no launcher.
    pub fn single() -> Self {
        Self {
            launcher: Launcher::None,
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_world_size: 1,
            master_addr: None,
            master_port: None,
            job_key: None,
        }
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Reads a given environment (tests pass their own).
    pub fn from_vars(env: &HashMap<String, String>) -> Result<Self> {
        let get = |k: &str| env.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let launch = if get("RANK").is_some() && get("WORLD_SIZE").is_some() {
            let rank = number(env, "RANK")?;
            let world_size = number(env, "WORLD_SIZE")?;
            let local_rank = optional_number(env, "LOCAL_RANK")?.unwrap_or(0);
            let local_world_size = optional_number(env, "LOCAL_WORLD_SIZE")?.unwrap_or(world_size);
            let master_port = match get("MASTER_PORT") {
                Some(p) => Some(p.parse::<u16>().with_context(|| format!("MASTER_PORT=`{p}` is not a port number"))?),
                None => None,
            };
            let job_key = [get("TORCHELASTIC_RUN_ID"), get("MASTER_ADDR"), get("MASTER_PORT"), get("TORCHELASTIC_RESTART_COUNT")]
                .iter()
                .any(Option::is_some)
                .then(|| {
                    format!(
                        "torchrun:{}:{}:{}:{}",
                        get("TORCHELASTIC_RUN_ID").unwrap_or(""),
                        get("MASTER_ADDR").unwrap_or(""),
                        get("MASTER_PORT").unwrap_or(""),
                        get("TORCHELASTIC_RESTART_COUNT").unwrap_or("")
                    )
                });
            Launch {
                launcher: Launcher::Torchrun,
                rank,
                world_size,
                local_rank,
                local_world_size,
                master_addr: get("MASTER_ADDR").map(str::to_string),
                master_port,
                job_key,
            }
        } else if get("OMPI_COMM_WORLD_RANK").is_some() {
            let world_size = number(env, "OMPI_COMM_WORLD_SIZE")?;
            Launch {
                launcher: Launcher::OpenMpi,
                rank: number(env, "OMPI_COMM_WORLD_RANK")?,
                world_size,
                local_rank: optional_number(env, "OMPI_COMM_WORLD_LOCAL_RANK")?.unwrap_or(0),
                local_world_size: optional_number(env, "OMPI_COMM_WORLD_LOCAL_SIZE")?.unwrap_or(world_size),
                master_addr: None,
                master_port: None,
                job_key: get("PMIX_NAMESPACE").or(get("OMPI_MCA_ess_base_jobid")).map(|k| format!("ompi:{k}")),
            }
        } else if get("PMI_RANK").is_some() {
            let world_size = number(env, "PMI_SIZE")?;
            Launch {
                launcher: Launcher::Mpich,
                rank: number(env, "PMI_RANK")?,
                world_size,
                local_rank: optional_number(env, "MPI_LOCALRANKID")?.unwrap_or(0),
                local_world_size: optional_number(env, "MPI_LOCALNRANKS")?.unwrap_or(world_size),
                master_addr: None,
                master_port: None,
                // Hydra gives nothing unique per job; a launch tells its files apart by the
                // process ids it exchanges at start (`dist::handshake`).
                job_key: get("PMI_KVSNAME").map(|k| format!("mpich:{k}")),
            }
        } else if get("SLURM_PROCID").is_some() && get("SLURM_NTASKS").is_some() {
            let world_size = number(env, "SLURM_NTASKS")?;
            let local_world_size = match get("SLURM_NTASKS_PER_NODE").and_then(|v| v.split('(').next()?.parse().ok()) {
                Some(n) => n,
                None => world_size,
            };
            Launch {
                launcher: Launcher::Slurm,
                rank: number(env, "SLURM_PROCID")?,
                world_size,
                local_rank: optional_number(env, "SLURM_LOCALID")?.unwrap_or(0),
                local_world_size,
                master_addr: None,
                master_port: None,
                job_key: get("SLURM_JOB_ID").map(|j| format!("slurm:{j}.{}", get("SLURM_STEP_ID").unwrap_or("0"))),
            }
        } else {
            Launch::single()
        };
        launch.check()?;
        Ok(launch)
    }

    fn check(&self) -> Result<()> {
        let from = self.launcher.name();
        ensure!(self.world_size >= 1, "{from}: the world size is 0");
        if self.rank >= self.world_size {
            bail!("{from}: rank {} is not below the world size {}", self.rank, self.world_size);
        }
        if self.local_rank >= self.local_world_size.max(1) {
            bail!("{from}: local rank {} is not below the local world size {}", self.local_rank, self.local_world_size);
        }
        Ok(())
    }
}

fn number(env: &HashMap<String, String>, key: &str) -> Result<usize> {
    optional_number(env, key)?.with_context(|| format!("the launcher set some variables but not {key}"))
}

fn optional_number(env: &HashMap<String, String>, key: &str) -> Result<Option<usize>> {
    match env.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse::<usize>().map(Some).with_context(|| format!("{key}=`{v}` is not a whole number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn no_launcher_is_one_process() {
        assert_eq!(Launch::from_vars(&env(&[("HOME", "/x")])).unwrap(), Launch::single());
    }

    #[test]
    fn torchrun_variables() {
        let l = Launch::from_vars(&env(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_RUN_ID", "abc"),
        ]))
        .unwrap();
        assert_eq!((l.launcher, l.rank, l.world_size, l.local_rank, l.local_world_size), (Launcher::Torchrun, 3, 8, 1, 2));
        assert_eq!(l.master_addr.as_deref(), Some("node0"));
        assert_eq!(l.master_port, Some(29500));
        assert!(l.job_key.unwrap().contains("abc"));
    }

    #[test]
    fn open_mpi_and_mpich_variables() {
        let o = Launch::from_vars(&env(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
        ]))
        .unwrap();
        assert_eq!((o.launcher, o.rank, o.world_size, o.local_rank, o.local_world_size), (Launcher::OpenMpi, 1, 4, 1, 2));
        let m = Launch::from_vars(&env(&[("PMI_RANK", "1"), ("PMI_SIZE", "2"), ("MPI_LOCALRANKID", "1"), ("MPI_LOCALNRANKS", "2")]))
            .unwrap();
        assert_eq!((m.launcher, m.rank, m.world_size, m.local_rank), (Launcher::Mpich, 1, 2, 1));
    }

    #[test]
    fn slurm_is_read_last() {
        let slurm = [("SLURM_PROCID", "5"), ("SLURM_NTASKS", "16"), ("SLURM_LOCALID", "1"), ("SLURM_NTASKS_PER_NODE", "4(x4)"), ("SLURM_JOB_ID", "77")];
        let s = Launch::from_vars(&env(&slurm)).unwrap();
        assert_eq!((s.launcher, s.rank, s.world_size, s.local_rank, s.local_world_size), (Launcher::Slurm, 5, 16, 1, 4));
        assert_eq!(s.job_key.as_deref(), Some("slurm:77.0"));
        // torchrun inside an allocation: its own variables win.
        let mut both = env(&slurm);
        both.extend(env(&[("RANK", "0"), ("WORLD_SIZE", "2")]));
        assert_eq!(Launch::from_vars(&both).unwrap().launcher, Launcher::Torchrun);
    }

    #[test]
    fn inconsistent_variables_are_errors_naming_them() {
        let e = Launch::from_vars(&env(&[("RANK", "2"), ("WORLD_SIZE", "2")])).unwrap_err();
        assert!(format!("{e:#}").contains("rank 2 is not below the world size 2"), "{e:#}");
        let e = Launch::from_vars(&env(&[("RANK", "x"), ("WORLD_SIZE", "2")])).unwrap_err();
        assert!(format!("{e:#}").contains("RANK=`x`"), "{e:#}");
        let e = Launch::from_vars(&env(&[("OMPI_COMM_WORLD_RANK", "0")])).unwrap_err();
        assert!(format!("{e:#}").contains("OMPI_COMM_WORLD_SIZE"), "{e:#}");
    }
}
