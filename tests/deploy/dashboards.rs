//! The Grafana dashboards: they type-check against `@grafana/schema`, and every PromQL expression
//! of every panel returns data from a real Prometheus running the compose config, scraping a
//! running grpc-chat (reached, like in the stack, directly and through the real Envoy) under a
//! scripted workload.

use std::{
    collections::HashSet,
    path::PathBuf,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::SinkExt;
use grpc_chat::proto::{
    chat_service_client::ChatServiceClient,
    chitty_chat::{ChatEvent, chat_client::ChatClient, chat_event},
};
use serde_json::Value;
use tokio_stream::wrappers::ReceiverStream;

use crate::{helpers::*, repo};

fn dashboards() -> Vec<(PathBuf, Value)> {
    let mut dashboards: Vec<(PathBuf, Value)> = std::fs::read_dir(repo("grafana/dashboards"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            let json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            (path, json)
        })
        .collect();
    dashboards.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!dashboards.is_empty());
    dashboards
}

/// Every `(panel title, expr)` of a dashboard, rows included.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((
                        panel["title"].as_str().unwrap_or("").to_owned(),
                        expr.to_owned(),
                    ));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

#[test]
fn dashboards_type_check_against_the_grafana_schema() {
    let node_tools = repo(".tools/node");
    for (path, _) in dashboards() {
        let json = std::fs::read_to_string(&path).unwrap();
        let source = node_tools.join(format!("dashboard-check-{}.ts", std::process::id()));
        std::fs::write(
            &source,
            format!("import type {{ Dashboard }} from \"@grafana/schema\";\nexport const dashboard: Dashboard = {json};\n"),
        )
        .unwrap();
        let output = Command::new(node_tools.join("node_modules/.bin/tsc"))
            .args([
                "--noEmit",
                "--strict",
                "--skipLibCheck",
                "--module",
                "nodenext",
                "--moduleResolution",
                "nodenext",
                "--target",
                "es2020",
            ])
            .arg(&source)
            .current_dir(&node_tools)
            .output()
            .unwrap();
        std::fs::remove_file(&source).unwrap();
        assert!(
            output.status.success(),
            "{} does not type-check:\n{}",
            path.display(),
            String::from_utf8_lossy(&output.stdout)
        );
    }
}

/// Traffic through every front door until `stop`: sends (some invalid), subscriptions, gRPC-Web
/// and WebSocket through Envoy, a Chitty-Chat participant.
async fn workload(
    server: std::net::SocketAddr,
    envoy: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
) {
    let mut client: ChatServiceClient<_> = connect(server).await;
    let mut web = web_client(envoy);
    let _subscriber = subscribe_on(&mut client, live("general")).await;
    let _web_subscriber = web
        .subscribe_messages(live("general"))
        .await
        .unwrap()
        .into_inner();
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{envoy}/ws?roomCode=general"))
            .await
            .unwrap();
    let (events, outbox) = tokio::sync::mpsc::channel(8);
    events
        .send(ChatEvent {
            timestamp: 1,
            event: Some(chat_event::Event::Join(chat_event::UserJoin {
                username: "chitty".into(),
            })),
        })
        .await
        .unwrap();
    let _chitty = ChatClient::new(channel(server).await)
        .broadcast(ReceiverStream::new(outbox))
        .await
        .unwrap();
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        client
            .send_message(send_request("general", "Alice", &format!("m{round}")))
            .await
            .unwrap();
        web.send_message(send_request("web", "WebUser", "hi"))
            .await
            .unwrap();
        let _ = client
            .send_message(send_request("general", "", "invalid"))
            .await;
        socket
            .send(tokio_tungstenite::tungstenite::Message::Text(
                r#"{"Author":"ws","Content":"hi"}"#.into(),
            ))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_query_returns_data_from_prometheus_with_the_compose_config() {
    let server = ServerProcess::start(&[]);
    let envoy = Envoy::start(server.addr, server.ws_addr);
    let compose_config = std::fs::read_to_string(repo("deploy/prometheus/prometheus.yml")).unwrap();
    let admin = server.admin_addr;
    let prometheus = Prometheus::start_with(|own| {
        compose_config
            .replace(
                r#"["grpc-chat-1:8081", "grpc-chat-2:8081"]"#,
                &format!("[\"{admin}\"]"),
            )
            .replace("localhost:9090", &own.to_string())
    });
    envoy.ready().await;
    prometheus.ready().await;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn(workload(server.addr, envoy.addr, Arc::clone(&stop)));

    // Grafana's variables as a viewer choosing "All" sees them: every value the variable's own
    // query finds, as a regex of alternatives.
    let jobs = label_values(&prometheus, "group by (job) (grpc_chat_rooms)", "job").await;
    let instances = label_values(
        &prometheus,
        &format!(r#"group by (instance) (grpc_chat_rooms{{job=~"{jobs}"}})"#),
        "instance",
    )
    .await;
    let queries: Vec<(String, String, String)> = dashboards()
        .iter()
        .flat_map(|(path, dashboard)| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let (jobs, instances) = (jobs.clone(), instances.clone());
            expressions(dashboard)
                .into_iter()
                .map(move |(title, expr)| {
                    let promql = expr
                        .replace("$__rate_interval", "1m")
                        .replace("$job", &jobs)
                        .replace("$instance", &instances);
                    (name.clone(), title, promql)
                })
        })
        .collect();
    assert!(queries.len() >= 15, "{} queries", queries.len());
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut empty: Vec<String>;
    loop {
        empty = Vec::new();
        for (dashboard, title, promql) in &queries {
            let result = prometheus.query(promql).await;
            if result.is_empty() {
                empty.push(format!("{dashboard} / {title}: {promql}"));
            }
            // Only the service's own job: Prometheus scrapes itself too, and its process
            // figures must not show up as grpc-chat's.
            for (labels, _) in &result {
                assert!(
                    labels.get("job").is_none_or(|job| job == "grpc-chat"),
                    "{dashboard} / {title} shows job {labels:?}: {promql}"
                );
            }
        }
        if empty.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    within("the workload", traffic).await.unwrap();
    assert!(
        empty.is_empty(),
        "queries without data:\n{}",
        empty.join("\n")
    );

    // Both jobs of the compose config were scraped.
    let jobs: HashSet<String> = prometheus
        .query("up == 1")
        .await
        .into_iter()
        .map(|(labels, _)| labels["job"].clone())
        .collect();
    assert_eq!(
        jobs,
        HashSet::from(["grpc-chat".to_owned(), "prometheus".to_owned()])
    );
}

/// Longest wait for Prometheus' first scrape of the server with the compose config.
const FIRST_SCRAPE: Duration = Duration::from_secs(30);

/// The values of `label` in the result of `promql`, as the regex Grafana makes of "All".
async fn label_values(prometheus: &Prometheus, promql: &str, label: &str) -> String {
    // The compose config scrapes every 5 s, and a new target's first scrape can take a few
    // intervals on a loaded machine (the image build runs beside this test): wait for it that long.
    let values: Vec<String> = within_for("the variable's values", FIRST_SCRAPE, async {
        loop {
            let values: Vec<String> = prometheus
                .query(promql)
                .await
                .into_iter()
                .filter_map(|(labels, _)| labels.get(label).cloned())
                .collect();
            if !values.is_empty() {
                return values;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let escaped: Vec<String> = values
        .iter()
        .map(|value| value.replace('.', r"\\."))
        .collect();
    format!("({})", escaped.join("|"))
}

#[test]
fn dashboards_use_the_datasource_job_and_instance_variables() {
    for (path, dashboard) in dashboards() {
        let variables: Vec<&str> = dashboard["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert!(
            ["datasource", "job", "instance"]
                .iter()
                .all(|name| variables.contains(name)),
            "{}",
            path.display()
        );
        for (title, expr) in expressions(&dashboard) {
            assert!(
                expr.contains(r#"job=~"$job", instance=~"$instance""#),
                "{title}: {expr}"
            );
            if expr.contains("rate(") || expr.contains("increase(") {
                assert!(expr.contains("[$__rate_interval]"), "{title}: {expr}");
            }
        }
    }
}
