//! Daemon process groups (`WSGIDaemonProcess`): supervision and dispatch.
