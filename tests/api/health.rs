use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::*;

#[tokio::test]
async fn the_server_and_the_chat_service_report_serving() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(channel(app.addr).await);
    for service in ["", "chat.ChatService"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            response.status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }
    let status = expect_err(
        health
            .check(HealthCheckRequest {
                service: "no.Such".into(),
            })
            .await,
    );
    assert_eq!(status.code(), Code::NotFound);
}
