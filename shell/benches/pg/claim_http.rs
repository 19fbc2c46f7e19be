//! Claims as people make them: `POST /api/v1/workspaces` with a bearer token, against the
//! real router on a loopback port (authentication, the template lookup, the claim).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{TimeDelta, Utc};
use poolkeeper::api::{router, ApiState};
use poolkeeper::store::auth::create_token;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::claim::{pick, ClaimFn, PresetRow};
use crate::prebuilds::{self, Scenario};

pub struct Api {
    base: String,
    client: reqwest::Client,
    /// One bearer token per claimer, in claimer order.
    tokens: Arc<Vec<String>>,
    server: JoinHandle<()>,
    pool: poolkeeper::db::DbPool,
}

impl Api {
    /// The API on an ephemeral port with a pool of `claimers` connections (opened before the
    /// clock starts), and a token for each user.
    pub async fn start(
        scenario: &Scenario,
        claimers: usize,
        users: &[(Uuid, String)],
    ) -> Result<Self> {
        let pool = prebuilds::claim_pool(scenario, claimers)?;
        let mut tokens = Vec::with_capacity(users.len());
        for (_, username) in users {
            let (token, _) = create_token(&pool, username, "bench", TimeDelta::days(1), Utc::now())
                .await
                .with_context(|| format!("a token for {username}"))?;
            tokens.push(token);
        }
        let warm: Vec<_> =
            futures_util::future::try_join_all((0..pool.status().max_size).map(|_| pool.get()))
                .await
                .context("open the API's connections")?;
        drop(warm);
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.context("bind the API's port")?;
        let base = format!("http://{}/api/v1/workspaces", listener.local_addr()?);
        let app = router(ApiState::new(pool.clone()));
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                eprintln!("the benchmark's API server stopped: {err}");
            }
        });
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(claimers)
            .build()
            .context("build the HTTP client")?;
        Ok(Self { base, client, tokens: Arc::new(tokens), server, pool })
    }

    /// Claimer `c`'s `k`th claim: a prebuild of a preset spread over `presets`.
    pub fn claims(&self, presets: &Arc<Vec<PresetRow>>) -> ClaimFn {
        let (base, client, tokens, presets) =
            (self.base.clone(), self.client.clone(), self.tokens.clone(), presets.clone());
        Arc::new(move |c, k| {
            let (base, client, tokens, presets) =
                (base.clone(), client.clone(), tokens.clone(), presets.clone());
            Box::pin(async move {
                let preset = pick(&presets, c, k);
                let body = serde_json::json!({
                    "template": preset.template,
                    "preset": preset.preset,
                    "name": format!("http-{c}-{k}"),
                });
                let response = client
                    .post(&base)
                    .bearer_auth(&tokens[c])
                    .json(&body)
                    .send()
                    .await
                    .context("POST /api/v1/workspaces")?;
                let status = response.status();
                let answer: serde_json::Value =
                    response.json().await.context("the claim's answer")?;
                if status != reqwest::StatusCode::CREATED {
                    bail!("POST /api/v1/workspaces: {status}: {answer}");
                }
                Ok(answer["claimed"].as_bool() == Some(true))
            })
        })
    }

    pub fn stop(self) {
        self.server.abort();
        self.pool.close();
    }
}
