//! A directory laid out and updated the way the kubelet maintains a mounted Secret volume,
//! so that certificate-reload tests see what a pod sees.
//!
//! Each file (`tls.crt`) is a symlink to `..data/tls.crt`; `..data` is a symlink to a
//! timestamped directory holding the real files. An update writes a complete new
//! directory, points a temporary `..data_tmp` symlink at it and renames that over `..data`
//! (one atomic step for all files), then removes the old directory.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

#[derive(Debug)]
pub struct SecretVolume {
    dir: PathBuf,
    generation: u32,
    current: Option<PathBuf>,
}

impl SecretVolume {
    /// Creates the volume at `dir` (which must not exist) holding `files` (name, content).
    pub fn create(dir: &Path, files: &[(&str, &[u8])]) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut v = Self {
            dir: dir.to_path_buf(),
            generation: 0,
            current: None,
        };
        v.update(files)?;
        for (name, _) in files {
            std::os::unix::fs::symlink(Path::new("..data").join(name), dir.join(name))
                .with_context(|| format!("linking {name}"))?;
        }
        Ok(v)
    }

    /// Replaces every file at once; `files` must name the same files as at creation.
    pub fn update(&mut self, files: &[(&str, &[u8])]) -> anyhow::Result<()> {
        self.generation += 1;
        let name = format!("..2026_01_01_00_00_00.{:09}", self.generation);
        let data = self.dir.join(&name);
        fs::create_dir(&data).with_context(|| format!("creating {}", data.display()))?;
        for (file, content) in files {
            fs::write(data.join(file), content).with_context(|| format!("writing {file}"))?;
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).context("linking ..data_tmp")?;
        fs::rename(&tmp, self.dir.join("..data")).context("renaming ..data_tmp to ..data")?;
        if let Some(old) = self.current.replace(data) {
            fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
        }
        Ok(())
    }

    /// The path a container would be given for `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}
