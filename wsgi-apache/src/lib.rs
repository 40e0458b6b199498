//! The Apache httpd 2.4 module.
