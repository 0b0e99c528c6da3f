//! A future with an optional deadline, as one type: the route timeout, the per-try timeout and
//! the downstream request timeout are each optional, and one await with one error arm reads
//! better than `match t { Some(t) => timeout(t, f).await, None => f.await }` repeated with its
//! timeout handling. (It does not shrink the enclosing future: measured with
//! `-Zprint-type-sizes`, rustc already overlaps the two arms' storage.)

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

pin_project! {
    pub struct MaybeTimeout<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl<F: Future> MaybeTimeout<F> {
    /// `inner`, cut off after `timeout` when one is given.
    pub fn new(inner: F, timeout: Option<Duration>) -> Self {
        MaybeTimeout {
            inner,
            sleep: timeout.map(tokio::time::sleep),
        }
    }
}

impl<F: Future> Future for MaybeTimeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.inner.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match this.sleep.as_pin_mut() {
            Some(sleep) => sleep.poll(cx).map(|()| Err(Elapsed)),
            None => Poll::Pending,
        }
    }
}

/// `MaybeTimeout` for a future the caller has already pinned where it was built. Wrapping a
/// future moves it, and so does awaiting the wrapper: for the request path's futures (KBs) that
/// was two whole copies per request, which a future pinned in place and raced here avoids.
pub struct Race<'a, F> {
    inner: Pin<&'a mut F>,
    sleep: Pin<&'a mut Option<Sleep>>,
}

impl<'a, F: Future> Race<'a, F> {
    pub fn new(inner: Pin<&'a mut F>, sleep: Pin<&'a mut Option<Sleep>>) -> Self {
        Race { inner, sleep }
    }
}

impl<F: Future> Future for Race<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(v) = this.inner.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match this.sleep.as_mut().as_pin_mut() {
            Some(sleep) => sleep.poll(cx).map(|()| Err(Elapsed)),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn finishes_first_or_elapses() {
        let quick = MaybeTimeout::new(async { 7 }, Some(Duration::from_secs(1)));
        assert_eq!(quick.await, Ok(7));
        let slow = MaybeTimeout::new(
            tokio::time::sleep(Duration::from_secs(5)),
            Some(Duration::from_secs(1)),
        );
        assert_eq!(slow.await, Err(Elapsed));
        let unbounded = MaybeTimeout::new(
            async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                1
            },
            None,
        );
        assert_eq!(unbounded.await, Ok(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pinned_future_finishes_first_or_elapses() {
        let quick = std::pin::pin!(async { 7 });
        let sleep = std::pin::pin!(Some(tokio::time::sleep(Duration::from_secs(1))));
        assert_eq!(Race::new(quick, sleep).await, Ok(7));
        let slow = std::pin::pin!(tokio::time::sleep(Duration::from_secs(5)));
        let sleep = std::pin::pin!(Some(tokio::time::sleep(Duration::from_secs(1))));
        assert_eq!(Race::new(slow, sleep).await, Err(Elapsed));
        let unbounded = std::pin::pin!(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            1
        });
        let none = std::pin::pin!(None);
        assert_eq!(Race::new(unbounded, none).await, Ok(1));
    }
}
