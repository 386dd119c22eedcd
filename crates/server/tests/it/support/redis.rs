//! Real `redis-server` processes on free loopback ports, started and
//! stopped by the tests (Debian package `redis-server`; `.ci/run` installs
//! it). A single Redis, or a Redis Cluster of several masters.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One `redis-server` process.
pub struct RedisProcess {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    cluster: bool,
}

use super::ports;

/// The cluster bus of a Redis Cluster node listens on its port + 10000.
const CLUSTER_BUS_OFFSET: u16 = 10_000;
/// Tries at a fresh port when a server exits at start (its port was taken
/// between the check and its bind).
const START_TRIES: usize = 5;

impl RedisProcess {
    /// A single Redis on a free port, without persistence.
    pub fn start() -> Self {
        Self::launch_anywhere(false)
    }

    /// A single Redis on `port`.
    pub fn start_on(port: u16) -> Self {
        let mut redis = Self::unstarted(port, false);
        redis.spawn();
        redis
    }

    fn unstarted(port: u16, cluster: bool) -> Self {
        Self {
            port,
            child: None,
            dir: tempfile::tempdir().unwrap(),
            cluster,
        }
    }

    fn launch_anywhere(cluster: bool) -> Self {
        let partner = if cluster { CLUSTER_BUS_OFFSET } else { 0 };
        for _ in 0..START_TRIES {
            let mut redis = Self::unstarted(ports::free_port_with_partner(partner), cluster);
            if redis.try_spawn() {
                return redis;
            }
        }
        panic!("redis-server did not start on any of {START_TRIES} free ports");
    }

    /// Starts the process on its port: panics if it does not answer.
    fn spawn(&mut self) {
        assert!(
            self.try_spawn(),
            "redis-server on {} did not start",
            self.port
        );
    }

    /// Starts the process; false when it exited at once (its port was taken).
    fn try_spawn(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        if self.cluster {
            command.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot run redis-server ({err}); install the Debian package redis-server (.ci/run does)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).trim() != "PONG" {
            let exited = self
                .child
                .as_mut()
                .is_some_and(|child| matches!(child.try_wait(), Ok(Some(_))));
            if exited || Instant::now() >= deadline {
                self.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-cli` against this server: its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Kills the server (SIGKILL: no goodbye to its clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of `masters` masters, no replicas, every slot assigned.
pub struct RedisCluster {
    pub nodes: Vec<RedisProcess>,
}

impl RedisCluster {
    pub fn start(masters: usize) -> Self {
        let nodes: Vec<RedisProcess> = (0..masters)
            .map(|_| RedisProcess::launch_anywhere(true))
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &nodes {
            while !node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "the cluster did not form");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Self { nodes }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisProcess::url).collect()
    }

    /// Sharded channels subscribed anywhere in the cluster matching `pattern`.
    pub fn shard_channels(&self, pattern: &str) -> Vec<String> {
        let mut all: Vec<String> = self
            .nodes
            .iter()
            .flat_map(|node| {
                node.cli(&["PUBSUB", "SHARDCHANNELS", pattern])
                    .lines()
                    .filter(|line| !line.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort();
        all
    }
}
