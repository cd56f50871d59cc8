//! The deployments page of the console in headless Chromium: being written.
