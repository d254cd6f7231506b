//! End-to-end through `flowgrid dev` with the real Auth and Agents apps: a tenant made by
//! `flowgrid admin create-tenant`, login through the host's one port, the token used against the
//! Agents app, refresh, and logout refused by the Agents app within the revocation bound.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowgrid_testkit::{free_port, run_cli, workspace_bin};
use serde_json::{Value, json};

/// A `flowgrid dev` process on a free port with its own data folder; stopped with SIGTERM on drop.
struct Dev {
    child: Child,
    url: String,
    data: tempfile::TempDir,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

impl Dev {
    async fn start(envs: &[(&str, &str)]) -> Dev {
        let flowgrid = workspace_bin("flowgrid", "flowgrid");
        workspace_bin("flowgrid-agents", "flowgrid-agents");
        workspace_bin("flowgrid-auth", "flowgrid-auth");
        let data = tempfile::tempdir().expect("data dir");
        let port = free_port();
        let mut cmd = Command::new(flowgrid);
        cmd.current_dir(workspace_root())
            .args(["dev", "--no-build", "--port", &port.to_string()])
            .env("FLOWGRID_DATA_DIR", data.path())
            .env("FLOWGRID_LOG", "warn")
            .env_remove("FLOWGRID_JWT_JWKS")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawning flowgrid dev");
        let dev = Dev {
            child,
            url: format!("http://127.0.0.1:{port}"),
            data,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}/api/health", dev.url)).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["apps"]["agents"]["state"] == "ready"
                && v["apps"]["auth"]["state"] == "ready"
            {
                return dev;
            }
            assert!(
                Instant::now() < deadline,
                "flowgrid dev did not serve the auth and agents apps within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_user_logs_in_through_flowgrid_dev_uses_the_agents_app_and_logout_is_honoured_everywhere()
{
    let dev = Dev::start(&[("FLOWGRID_REVOCATION_CACHE_SECS", "1")]).await;
    let created: Value = serde_json::from_str(
        run_cli(
            dev.data.path(),
            &[
                "admin",
                "create-tenant",
                "--name",
                "Acme",
                "--admin-email",
                "ann@acme.test",
                "--json",
            ],
        )
        .trim(),
    )
    .expect("create-tenant --json prints JSON");
    let client = reqwest::Client::new();
    let login = client
        .post(format!("{}/api/auth/login", dev.url))
        .json(&json!({"email": "ann@acme.test", "password": created["password"]}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 200);
    let tokens: Value = login.json().await.expect("json");
    let access = tokens["accessToken"]
        .as_str()
        .expect("access token")
        .to_owned();

    let list = |token: String| {
        let client = client.clone();
        let url = format!("{}/api/agents", dev.url);
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("list")
                .status()
        }
    };
    assert_eq!(list(access.clone()).await, 200);

    let refreshed = client
        .post(format!("{}/api/auth/refresh", dev.url))
        .json(&json!({"refreshToken": tokens["refreshToken"]}))
        .send()
        .await
        .expect("refresh");
    assert_eq!(refreshed.status(), 200);
    let jwks: Value = client
        .get(format!("{}/api/auth/.well-known/jwks.json", dev.url))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    assert!(!jwks["keys"].as_array().expect("keys").is_empty());

    let logout = client
        .post(format!("{}/api/auth/logout", dev.url))
        .bearer_auth(&access)
        .send()
        .await
        .expect("logout");
    assert_eq!(logout.status(), 204);
    let started = Instant::now();
    while list(access.clone()).await != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the Agents app still accepts a logged-out session through flowgrid dev"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
