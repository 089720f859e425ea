//! `grpc.health.v1.Health`, as the gRPC health-checking protocol describes it.
//!
//! `Check` answers the status of a known service and NOT_FOUND for any other. `Watch` sends the
//! service's status at once, SERVICE_UNKNOWN for an unknown one (the call stays open, as the
//! protocol says, and would report the service if it became known), then every change. When the
//! server drains, a watch sees NOT_SERVING and then ends, so it does not hold shutdown open; when
//! only its connection drains (maximum age), it ends with UNAVAILABLE.

use std::{collections::BTreeMap, pin::Pin, sync::Arc};

use futures_util::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
};

use crate::{
    proto::health::health_server::{Health, HealthServer},
    shutdown::{Drain, Ending},
};

/// The status of every service the server reports on; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct HealthStatus(Arc<watch::Sender<BTreeMap<String, ServingStatus>>>);

impl HealthStatus {
    /// `services` (with `""` for the whole server), all NOT_SERVING until [`HealthStatus::set`].
    pub(crate) fn new(services: &[&str]) -> Self {
        let statuses = services
            .iter()
            .map(|service| ((*service).to_owned(), ServingStatus::NotServing))
            .collect();
        Self(Arc::new(watch::Sender::new(statuses)))
    }

    /// Reports `status` for every service.
    pub(crate) fn set(&self, status: ServingStatus) {
        self.0.send_modify(|statuses| {
            for value in statuses.values_mut() {
                *value = status;
            }
        });
    }

    fn of(statuses: &BTreeMap<String, ServingStatus>, service: &str) -> ServingStatus {
        statuses
            .get(service)
            .copied()
            .unwrap_or(ServingStatus::ServiceUnknown)
    }
}

/// The health service over `status`; watches end when `drain` starts.
pub(crate) fn service(status: HealthStatus, drain: Drain) -> HealthServer<HealthApi> {
    HealthServer::new(HealthApi { status, drain })
}

/// See the module documentation.
pub(crate) struct HealthApi {
    status: HealthStatus,
    drain: Drain,
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

#[tonic::async_trait]
impl Health for HealthApi {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match self.status.0.borrow().get(&service) {
            Some(status) => Ok(Response::new(response(*status))),
            None => Err(Status::not_found(format!("unknown service {service:?}"))),
        }
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let drain = Drain::of(request.extensions(), &self.drain);
        let service = request.into_inner().service;
        let mut statuses = self.status.0.subscribe();
        Ok(Response::new(Box::pin(async_stream::stream! {
            let mut sent = HealthStatus::of(&statuses.borrow_and_update(), &service);
            yield Ok(response(sent));
            let mut draining = std::pin::pin!(drain.wait());
            loop {
                // Changes first: NOT_SERVING is set before the drain starts and must be seen.
                let ended = tokio::select! {
                    biased;
                    changed = statuses.changed() => changed.is_err(),
                    () = &mut draining => true,
                };
                let status = HealthStatus::of(&statuses.borrow_and_update(), &service);
                if status != sent {
                    sent = status;
                    yield Ok(response(status));
                }
                if ended {
                    // A server drain ends the watch after NOT_SERVING; its connection's end
                    // tells the client to reconnect.
                    if drain.ended() == Some(Ending::ConnectionAge) {
                        yield Err(Ending::ConnectionAge.error().into());
                    }
                    break;
                }
            }
        })))
    }
}
