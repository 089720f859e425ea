//! `grpc.health.v1.Health`, with watches that end when the server drains.
//!
//! tonic-health's watch streams never end on their own, so they would hold graceful shutdown open
//! until the grace period. This wrapper delegates to it and ends each watch on the drain token,
//! after the watcher has seen NOT_SERVING.

use std::pin::Pin;

use futures_util::{FutureExt, Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::{
    pb::{
        HealthCheckRequest, HealthCheckResponse,
        health_server::{Health, HealthServer},
    },
    server::{HealthReporter, HealthService},
};

/// The health service for `reporter`'s statuses; watches end when `drain` is cancelled.
pub fn service(reporter: HealthReporter, drain: CancellationToken) -> HealthServer<DrainingHealth> {
    HealthServer::new(DrainingHealth {
        inner: HealthService::from_health_reporter(reporter),
        drain,
    })
}

/// See the module documentation.
pub struct DrainingHealth {
    inner: HealthService,
    drain: CancellationToken,
}

#[tonic::async_trait]
impl Health for DrainingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let statuses = self.inner.watch(request).await?.into_inner();
        // The status change to NOT_SERVING is published before the token is cancelled; the short
        // yield lets the watch deliver it before the stream is cut.
        let drained = self
            .drain
            .clone()
            .cancelled_owned()
            .then(|()| tokio::task::yield_now());
        Ok(Response::new(Box::pin(statuses.take_until(drained))))
    }
}
