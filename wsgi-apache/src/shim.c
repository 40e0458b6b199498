/*
 * The C face of mod_wsgi_rs: Apache's command table, its directive callbacks, the
 * configuration hooks, the per-directory configuration of the access and auth scripts, and the
 * access checker and auth providers that run them. It only reads Apache's structures and hands
 * plain values to Rust, where wsgi-config's builder (the same code `wsgi check` runs) accepts
 * or refuses each directive and the hooks decide. The module structure itself is defined in
 * Rust (src/module.rs), which exports it.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_main.h"
#include "http_protocol.h"
#include "http_request.h"
#include "ap_mpm.h"
#include "ap_provider.h"
#include "apr_strings.h"
#include "mod_auth.h"
#include "util_filter.h"
#include "unixd.h"

/* The layout the Rust mirror of `module` (src/module.rs) assumes, checked on both sides. */
_Static_assert(offsetof(module, cmds) == 88, "module.cmds offset");
_Static_assert(offsetof(module, register_hooks) == 96, "module.register_hooks offset");
_Static_assert(sizeof(module) == 112, "module size");

/* The status values src/script_hooks.rs returns, as mod_auth.h numbers them. */
_Static_assert(AUTH_DENIED == 0 && AUTH_GRANTED == 1 && AUTH_USER_FOUND == 2
               && AUTH_USER_NOT_FOUND == 3 && AUTH_GENERAL_ERROR == 4, "authn_status values");
_Static_assert(AUTHZ_DENIED == 0 && AUTHZ_GRANTED == 1 && AUTHZ_NEUTRAL == 2
               && AUTHZ_GENERAL_ERROR == 3 && AUTHZ_DENIED_NO_USER == 4, "authz_status values");
_Static_assert(OK == 0 && DECLINED == -1, "hook return values");

/* Defined in Rust (src/module.rs). */
extern module AP_MODULE_DECLARE_DATA wsgi_rs_module;

/* One enclosing section, outermost first. Mirrored by RawSection (src/ffi.rs), which asserts
 * the same layout. */
struct wsgi_rs_section {
    const char *kind;
    const char *args;
    const char *file;
    int line;
};
_Static_assert(offsetof(struct wsgi_rs_section, kind) == 0, "wsgi_rs_section.kind");
_Static_assert(offsetof(struct wsgi_rs_section, args) == 8, "wsgi_rs_section.args");
_Static_assert(offsetof(struct wsgi_rs_section, file) == 16, "wsgi_rs_section.file");
_Static_assert(offsetof(struct wsgi_rs_section, line) == 24, "wsgi_rs_section.line");
_Static_assert(sizeof(struct wsgi_rs_section) == 32, "wsgi_rs_section size");

/* Rust (src/directive_callbacks.rs). Returned strings are freed with wsgi_rs_free. */
extern char *wsgi_rs_directive(const char *name, const char *args, const char *file, int line,
                               const struct wsgi_rs_section *sections, int count,
                               int htaccess);
extern void wsgi_rs_reset(const char *server_root);
extern void wsgi_rs_server_name(const char *vhost_file, int vhost_line, const char *name,
                                const char *const *aliases, int alias_count);
extern char *wsgi_rs_finish(void);
extern void wsgi_rs_free(char *text);
extern int wsgi_rs_translate(request_rec *r);
extern int wsgi_rs_handle(request_rec *r);
extern void wsgi_rs_child_init(void);
extern void wsgi_rs_child_exit(void);
extern void wsgi_rs_server_user(const char *user, const char *group);
extern char *wsgi_rs_start_daemons(void);
extern void wsgi_rs_stop_daemons(void);
/* src/script_hooks.rs */
extern char *wsgi_rs_aux_script(const char *name, const char *args, int *id);
extern int wsgi_rs_hook_access(request_rec *r, int script, const char *host);
extern int wsgi_rs_hook_password(request_rec *r, int script, const char *user,
                                 const char *password);
extern int wsgi_rs_hook_realm_hash(request_rec *r, int script, const char *user,
                                   const char *realm, char **hash);
extern int wsgi_rs_hook_groups(request_rec *r, int script, const char *user,
                               const char *require_args);
/* src/htaccess.rs */
extern char *wsgi_rs_htaccess_directive(const char *name, const char *args, const char *file,
                                        int line, int current, int *id);
extern int wsgi_rs_merge_settings(int base, int add);
/* src/handlers.rs */
extern int wsgi_rs_is_script_handler(const char *name);
extern int wsgi_rs_handle_script_handler(request_rec *r, const char *name);

#define WSGI_RS_MAX_DEPTH 64

/* mod_wsgi's handler name for WSGI scripts. */
#define WSGI_RS_SCRIPT_HANDLER "wsgi-script"
/* The request note holding the URI a WSGIScriptAlias mapped (see wsgi_rs_set_target). */
#define WSGI_RS_ALIAS_NOTE "mod_wsgi_rs.alias_uri"

/* Which script each slot of the per-directory configuration holds (the command table passes
 * the slot as cmd->info). */
enum { WSGI_RS_ACCESS_SCRIPT, WSGI_RS_AUTH_USER_SCRIPT, WSGI_RS_AUTH_GROUP_SCRIPT,
       WSGI_RS_SCRIPT_SLOTS };

/* Per-directory: the scripts in force, as ids of Rust's script table (src/script_hooks.rs), -1 unset.
 * Apache merges them like any directory configuration, .htaccess files included. */
struct wsgi_rs_dir_config {
    int scripts[WSGI_RS_SCRIPT_SLOTS];
    /* The WSGI settings of .htaccess lines, as an id of src/htaccess.rs's table (-1: none). */
    int settings;
};

/* Feeds the line `d` (directive `name`, arguments `args`) to wsgi-config's builder, with the
 * sections around it. */
static const char *wsgi_rs_feed(cmd_parms *cmd, const ap_directive_t *d, const char *name,
                                const char *args)
{
    struct wsgi_rs_section sections[WSGI_RS_MAX_DEPTH];
    const ap_directive_t *chain[WSGI_RS_MAX_DEPTH];
    const ap_directive_t *p;
    int depth = 0;
    int i;
    char *error;
    const char *copy;

    for (p = d ? d->parent : NULL; p != NULL && depth < WSGI_RS_MAX_DEPTH; p = p->parent) {
        chain[depth++] = p;
    }
    for (i = 0; i < depth; i++) {
        const ap_directive_t *s = chain[depth - 1 - i];
        char *section_args = apr_pstrdup(cmd->temp_pool, s->args ? s->args : "");
        size_t n = strlen(section_args);
        if (n > 0 && section_args[n - 1] == '>') {
            section_args[n - 1] = '\0';
        }
        sections[i].kind = s->directive[0] == '<' ? s->directive + 1 : s->directive;
        sections[i].args = section_args;
        sections[i].file = s->filename;
        sections[i].line = s->line_num;
    }
    error = wsgi_rs_directive(name, args ? args : "", d && d->filename ? d->filename : "",
                              d ? d->line_num : 0, sections, depth, 0);
    if (error == NULL) {
        return NULL;
    }
    copy = apr_pstrdup(cmd->pool, error);
    wsgi_rs_free(error);
    return copy;
}

static const char *wsgi_rs_cmd(cmd_parms *cmd, void *mconfig, const char *args)
{
    const ap_directive_t *d = cmd->directive;
    int htaccess = (cmd->override & (RSRC_CONF | ACCESS_CONF)) == 0;
    char *error;
    const char *copy;

    if (htaccess && mconfig != NULL) {
        /* Read per request: the line becomes this directory's settings (src/htaccess.rs). */
        struct wsgi_rs_dir_config *conf = mconfig;
        int id = conf->settings;
        error = wsgi_rs_htaccess_directive(cmd->cmd->name, args ? args : "",
                                           d && d->filename ? d->filename : "",
                                           d ? d->line_num : 0, conf->settings, &id);
        if (error == NULL) {
            conf->settings = id;
            return NULL;
        }
        copy = apr_pstrdup(cmd->pool, error);
        wsgi_rs_free(error);
        return copy;
    }
    return wsgi_rs_feed(cmd, d, cmd->cmd->name, args);
}

/* <WSGIInterpreterOptions process-group=NAME application-group=NAME> (mod_wsgi 6): the
 * builder checks the section, then Apache reads the lines inside, each fed to the builder with
 * the section around it. A line of another module inside is fed too, for the builder to refuse
 * (Apache would apply it to the whole server). */
static const char *wsgi_rs_interpreter_options(cmd_parms *cmd, void *mconfig, const char *args)
{
    const char *end = ap_strrchr_c(args, '>');
    const ap_directive_t *child;
    const char *error;

    if (end == NULL) {
        return apr_pstrcat(cmd->pool, cmd->cmd->name, "> directive missing closing '>'", NULL);
    }
    error = wsgi_rs_feed(cmd, cmd->directive, cmd->cmd->name,
                         apr_pstrndup(cmd->temp_pool, args, end - args));
    if (error != NULL) {
        return error;
    }
    for (child = cmd->directive->first_child; child != NULL; child = child->next) {
        if (strncasecmp(child->directive, "WSGI", 4) != 0) {
            error = wsgi_rs_feed(cmd, child, child->directive, child->args);
            if (error != NULL) {
                return apr_psprintf(cmd->pool, "%s:%d: %s", child->filename, child->line_num,
                                    error);
            }
        }
    }
    return ap_walk_config(cmd->directive->first_child, cmd, cmd->context);
}

/* ---- WSGIAccessScript, WSGIAuthUserScript, WSGIAuthGroupScript ---- */

void *wsgi_rs_create_dir_config(apr_pool_t *p, char *dir)
{
    struct wsgi_rs_dir_config *conf = apr_palloc(p, sizeof(*conf));
    int i;
    for (i = 0; i < WSGI_RS_SCRIPT_SLOTS; i++) {
        conf->scripts[i] = -1;
    }
    conf->settings = -1;
    return conf;
}

void *wsgi_rs_merge_dir_config(apr_pool_t *p, void *base_conf, void *add_conf)
{
    const struct wsgi_rs_dir_config *base = base_conf;
    const struct wsgi_rs_dir_config *add = add_conf;
    struct wsgi_rs_dir_config *conf = apr_palloc(p, sizeof(*conf));
    int i;
    for (i = 0; i < WSGI_RS_SCRIPT_SLOTS; i++) {
        conf->scripts[i] = add->scripts[i] >= 0 ? add->scripts[i] : base->scripts[i];
    }
    if (add->settings >= 0 && base->settings >= 0) {
        conf->settings = wsgi_rs_merge_settings(base->settings, add->settings);
    } else {
        conf->settings = add->settings >= 0 ? add->settings : base->settings;
    }
    return conf;
}

/* The script id of a slot for a request (-1: none applies). */
static int wsgi_rs_dir_script(request_rec *r, int slot)
{
    const struct wsgi_rs_dir_config *conf =
        ap_get_module_config(r->per_dir_config, &wsgi_rs_module);
    return conf != NULL ? conf->scripts[slot] : -1;
}

/* The request's .htaccess settings id (src/htaccess.rs, through src/ffi.rs), -1 when none. */
int wsgi_rs_request_settings(request_rec *r)
{
    const struct wsgi_rs_dir_config *conf =
        ap_get_module_config(r->per_dir_config, &wsgi_rs_module);
    return conf != NULL ? conf->settings : -1;
}

/* An access or auth script directive: checked by the builder like every directive (except in
 * .htaccess files, read per request once the configuration is complete), then recorded in the
 * directory configuration. */
static const char *wsgi_rs_aux_cmd(cmd_parms *cmd, void *mconfig, const char *args)
{
    struct wsgi_rs_dir_config *conf = mconfig;
    int slot = (int)(intptr_t)cmd->info;
    int htaccess = (cmd->override & (RSRC_CONF | ACCESS_CONF)) == 0;
    int id = -1;
    const char *error;
    char *message;

    if (!htaccess) {
        error = wsgi_rs_cmd(cmd, mconfig, args);
        if (error != NULL) {
            return error;
        }
    }
    message = wsgi_rs_aux_script(cmd->cmd->name, args ? args : "", &id);
    if (message != NULL) {
        error = apr_pstrdup(cmd->pool, message);
        wsgi_rs_free(message);
        return error;
    }
    if (conf != NULL && slot >= 0 && slot < WSGI_RS_SCRIPT_SLOTS) {
        conf->scripts[slot] = id;
    }
    return NULL;
}

static int wsgi_rs_access_checker(request_rec *r)
{
    int script = wsgi_rs_dir_script(r, WSGI_RS_ACCESS_SCRIPT);
    const char *host;
    if (script < 0) {
        return DECLINED;
    }
    /* The client's host name when HostnameLookups gives one, else its address (mod_wsgi's
     * `host` argument). */
    host = ap_get_remote_host(r->connection, r->per_dir_config, REMOTE_HOST, NULL);
    if (host == NULL) {
        host = r->useragent_ip;
    }
    return wsgi_rs_hook_access(r, script, host);
}

static authn_status wsgi_rs_check_password(request_rec *r, const char *user,
                                           const char *password)
{
    return (authn_status)wsgi_rs_hook_password(
        r, wsgi_rs_dir_script(r, WSGI_RS_AUTH_USER_SCRIPT), user, password);
}

static authn_status wsgi_rs_get_realm_hash(request_rec *r, const char *user, const char *realm,
                                           char **rethash)
{
    char *hash = NULL;
    int status = wsgi_rs_hook_realm_hash(r, wsgi_rs_dir_script(r, WSGI_RS_AUTH_USER_SCRIPT),
                                         user, realm, &hash);
    if (hash != NULL) {
        *rethash = apr_pstrdup(r->pool, hash);
        wsgi_rs_free(hash);
    }
    return (authn_status)status;
}

static const authn_provider wsgi_rs_authn_provider = {
    wsgi_rs_check_password,
    wsgi_rs_get_realm_hash,
};

static authz_status wsgi_rs_check_groups(request_rec *r, const char *require_args,
                                         const void *parsed_require_args)
{
    if (r->user == NULL) {
        return AUTHZ_DENIED_NO_USER;
    }
    return (authz_status)wsgi_rs_hook_groups(
        r, wsgi_rs_dir_script(r, WSGI_RS_AUTH_GROUP_SCRIPT), r->user, require_args);
}

static const authz_provider wsgi_rs_authz_provider = {
    wsgi_rs_check_groups,
    NULL,
};

/* check_password() returned another name for the user: it is the user from now on. */
void wsgi_rs_set_user(request_rec *r, const char *user)
{
    r->user = apr_pstrdup(r->pool, user);
}

#include "wsgi_rs_cmds.h"

/* ServerName/ServerAlias of every server, which only Apache's core module sees. */
static void wsgi_rs_feed_server_names(server_rec *main_server)
{
    server_rec *s;
    for (s = main_server; s != NULL; s = s->next) {
        const char *const *aliases = NULL;
        int count = 0;
        if (s->names != NULL) {
            aliases = (const char *const *)s->names->elts;
            count = s->names->nelts;
        }
        if (s->server_hostname == NULL) {
            continue;
        }
        if (s->is_virtual) {
            wsgi_rs_server_name(s->defn_name, (int)s->defn_line_number, s->server_hostname,
                                aliases, count);
        } else {
            wsgi_rs_server_name(NULL, 0, s->server_hostname, aliases, count);
        }
    }
}

static int wsgi_rs_pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp)
{
    wsgi_rs_reset(ap_server_root);
    return OK;
}

/* Cross-directive checks (process groups named but never defined, ...). */
static char *wsgi_rs_complete(server_rec *s)
{
    wsgi_rs_feed_server_names(s);
    /* Apache's User/Group: daemon processes run as them unless user=/group= say otherwise,
     * and their sockets belong to them so the children can connect. */
    wsgi_rs_server_user(ap_unixd_config.user_name, ap_unixd_config.group_name);
    return wsgi_rs_finish();
}

static apr_status_t wsgi_rs_daemons_cleanup(void *data)
{
    wsgi_rs_stop_daemons();
    return APR_SUCCESS;
}

static void wsgi_rs_test_config(apr_pool_t *pconf, server_rec *s)
{
    char *errors = wsgi_rs_complete(s);
    if (errors != NULL) {
        fprintf(stderr, "%s\n", errors);
        fflush(stderr);
        wsgi_rs_free(errors);
        exit(1);
    }
}

extern const char *wsgi_rs_version_component(void);

static int wsgi_rs_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                               server_rec *s)
{
    char *errors = wsgi_rs_complete(s);
    const char *component = wsgi_rs_version_component();
    if (component != NULL) {
        ap_add_version_component(pconf, component);
    }
    if (errors != NULL) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "mod_wsgi_rs: %s", errors);
        wsgi_rs_free(errors);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    /* Daemon processes start on the real configuration pass only (Apache reads its
     * configuration once more before that, to check it), and stop when it is cleared
     * (restart, graceful restart, stop). */
    if (ap_state_query(AP_SQ_MAIN_STATE) != AP_SQ_MS_CREATE_PRE_CONFIG) {
        errors = wsgi_rs_start_daemons();
        if (errors != NULL) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "mod_wsgi_rs: %s", errors);
            wsgi_rs_free(errors);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        apr_pool_cleanup_register(pconf, NULL, wsgi_rs_daemons_cleanup, apr_pool_cleanup_null);
    }
    return OK;
}

/* ---- Requests: plain accessors for src/ffi.rs's Request ---- */

/* What the environ and the router need from a request. */
struct wsgi_rs_request {
    const char *method;
    const char *path;          /* the URL path as sent (still percent-encoded) */
    const char *unparsed_uri;
    const char *args;
    const char *protocol;
    const char *hostname;
    const char *vhost_file;
    int vhost_line;
    const char *local_ip;
    int local_port;
    const char *remote_ip;
    int remote_port;
    const char *scheme;
    const char *document_root;
    const char *server_software;
    const char *server_admin;
    const char *user;
    const char *auth_type;
    int multithread;
    int multiprocess;
    const char *server_name;   /* SERVER_NAME as Apache gives it (UseCanonicalName) */
    int server_port;
    const char *context_prefix;
    const char *context_document_root;
    const char *log_id;
    long long request_time_us;
    const char *uri;           /* decoded path, as Apache maps it */
    const char *path_info;
    const char *filename;
    int exec_cgi;              /* Options ExecCGI is on where r->filename is */
    int filetype;              /* r->finfo.filetype: what the directory walk found there */
    const char *alias_uri;     /* r->uri when translate_name claimed it for a WSGIScriptAlias */
};

/* The layout RawRequest (src/ffi.rs) mirrors: the same numbers are asserted there, so a field
 * changed on one side only fails the build. */
#define WSGI_RS_REQUEST_AT(field, offset) \
    _Static_assert(offsetof(struct wsgi_rs_request, field) == (offset), \
                   "wsgi_rs_request." #field " offset")
WSGI_RS_REQUEST_AT(method, 0);
WSGI_RS_REQUEST_AT(path, 8);
WSGI_RS_REQUEST_AT(unparsed_uri, 16);
WSGI_RS_REQUEST_AT(args, 24);
WSGI_RS_REQUEST_AT(protocol, 32);
WSGI_RS_REQUEST_AT(hostname, 40);
WSGI_RS_REQUEST_AT(vhost_file, 48);
WSGI_RS_REQUEST_AT(vhost_line, 56);
WSGI_RS_REQUEST_AT(local_ip, 64);
WSGI_RS_REQUEST_AT(local_port, 72);
WSGI_RS_REQUEST_AT(remote_ip, 80);
WSGI_RS_REQUEST_AT(remote_port, 88);
WSGI_RS_REQUEST_AT(scheme, 96);
WSGI_RS_REQUEST_AT(document_root, 104);
WSGI_RS_REQUEST_AT(server_software, 112);
WSGI_RS_REQUEST_AT(server_admin, 120);
WSGI_RS_REQUEST_AT(user, 128);
WSGI_RS_REQUEST_AT(auth_type, 136);
WSGI_RS_REQUEST_AT(multithread, 144);
WSGI_RS_REQUEST_AT(multiprocess, 148);
WSGI_RS_REQUEST_AT(server_name, 152);
WSGI_RS_REQUEST_AT(server_port, 160);
WSGI_RS_REQUEST_AT(context_prefix, 168);
WSGI_RS_REQUEST_AT(context_document_root, 176);
WSGI_RS_REQUEST_AT(log_id, 184);
WSGI_RS_REQUEST_AT(request_time_us, 192);
WSGI_RS_REQUEST_AT(uri, 200);
WSGI_RS_REQUEST_AT(path_info, 208);
WSGI_RS_REQUEST_AT(filename, 216);
WSGI_RS_REQUEST_AT(exec_cgi, 224);
WSGI_RS_REQUEST_AT(filetype, 228);
WSGI_RS_REQUEST_AT(alias_uri, 232);
_Static_assert(sizeof(struct wsgi_rs_request) == 240, "wsgi_rs_request size");
#undef WSGI_RS_REQUEST_AT

void wsgi_rs_request_info(request_rec *r, struct wsgi_rs_request *out)
{
    int threads = 1, daemons = 1;
    memset(out, 0, sizeof(*out));
    out->method = r->method;
    out->path = r->parsed_uri.path ? r->parsed_uri.path : r->uri;
    out->unparsed_uri = r->unparsed_uri;
    out->args = r->args;
    out->protocol = r->protocol;
    out->hostname = r->hostname;
    if (r->server->is_virtual) {
        out->vhost_file = r->server->defn_name;
        out->vhost_line = (int)r->server->defn_line_number;
    }
    out->local_ip = r->connection->local_ip;
    out->local_port = r->connection->local_addr ? r->connection->local_addr->port : 0;
    out->remote_ip = r->useragent_ip;
    out->remote_port = r->useragent_addr ? r->useragent_addr->port : 0;
    out->scheme = ap_http_scheme(r);
    out->document_root = ap_document_root(r);
    out->server_software = ap_get_server_banner();
    out->server_admin = r->server->server_admin;
    out->user = r->user;
    out->auth_type = r->ap_auth_type;
    ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads);
    ap_mpm_query(AP_MPMQ_MAX_DAEMONS, &daemons);
    out->multithread = threads > 1;
    out->multiprocess = daemons > 1;
    out->server_name = ap_get_server_name(r);
    out->server_port = (int)ap_get_server_port(r);
    out->context_prefix = ap_context_prefix(r);
    out->context_document_root = ap_context_document_root(r);
    if (r->log_id == NULL) {
        /* mod_wsgi.request_id: as mod_wsgi does, the log id is made when no log format has
         * asked for one yet. */
        ap_run_generate_log_id(r->connection, r, &r->log_id);
    }
    out->log_id = r->log_id;
    out->request_time_us = (long long)r->request_time;
    out->uri = r->uri;
    out->path_info = r->path_info;
    out->filename = r->filename;
    out->exec_cgi = (ap_allow_options(r) & OPT_EXECCGI) != 0;
    out->filetype = (int)r->finfo.filetype;
    out->alias_uri = apr_table_get(r->notes, WSGI_RS_ALIAS_NOTE);
}

typedef void (*wsgi_rs_pair_cb)(void *ctx, const char *key, const char *value);

struct wsgi_rs_pairs {
    wsgi_rs_pair_cb cb;
    void *ctx;
};

static int wsgi_rs_pair(void *data, const char *key, const char *value)
{
    struct wsgi_rs_pairs *pairs = data;
    pairs->cb(pairs->ctx, key, value ? value : "");
    return 1;
}

/* The request headers, in arrival order. */
void wsgi_rs_request_headers(request_rec *r, wsgi_rs_pair_cb cb, void *ctx)
{
    struct wsgi_rs_pairs pairs = { cb, ctx };
    apr_table_do(wsgi_rs_pair, &pairs, r->headers_in, NULL);
}

/* SetEnv/SetEnvIf/RewriteRule [E=] variables (r->subprocess_env). */
void wsgi_rs_request_env(request_rec *r, wsgi_rs_pair_cb cb, void *ctx)
{
    struct wsgi_rs_pairs pairs = { cb, ctx };
    apr_table_do(wsgi_rs_pair, &pairs, r->subprocess_env, NULL);
}

/* Up to len bytes of the (de-chunked) request body: 0 at the end, -1 on error. */
long wsgi_rs_read_body(request_rec *r, char *buf, apr_size_t len)
{
    return ap_get_client_block(r, buf, len);
}

/* Status and headers; sent with the first body write (or at the end). */
void wsgi_rs_send_head(request_rec *r, int status, const char *reason,
                       const char *const *names, const char *const *values,
                       const apr_size_t *value_lens, int count)
{
    int i;
    r->status = status;
    r->status_line = apr_psprintf(r->pool, "%d %s", status, reason);
    for (i = 0; i < count; i++) {
        const char *value = apr_pstrmemdup(r->pool, values[i], value_lens[i]);
        if (strcasecmp(names[i], "Content-Type") == 0) {
            ap_set_content_type(r, value);
        } else if (strcasecmp(names[i], "WWW-Authenticate") == 0) {
            apr_table_add(r->err_headers_out, names[i], value);
        } else {
            apr_table_add(r->headers_out, apr_pstrdup(r->pool, names[i]), value);
        }
    }
}

/* One body chunk: 0, or -1 when the client is gone. Flushed when `flush` is non-zero, so
 * responses stream; else left in the request's buffer (a short chunk the response ends with),
 * which Apache sends with the response's end. */
int wsgi_rs_write(request_rec *r, const char *buf, apr_size_t len, int flush)
{
    if (ap_rwrite(buf, (int)len, r) < 0 || (flush && ap_rflush(r) < 0)) {
        return -1;
    }
    return r->connection->aborted ? -1 : 0;
}

static apr_status_t wsgi_rs_close_fd(void *data)
{
    return apr_file_close((apr_file_t *)data);
}

/* len bytes of the file `fd` from `offset`, sent as Apache sends a static file: with
 * sendfile where `EnableSendfile On` says so, else from memory (mmap unless `EnableMMAP Off`),
 * as the default handler does. The descriptor is duplicated: Apache may send the file bucket
 * after the handler has returned. */
int wsgi_rs_sendfile(request_rec *r, int fd, apr_off_t offset, apr_size_t len)
{
    core_dir_config *d = ap_get_core_module_config(r->per_dir_config);
    apr_int32_t flags = APR_FOPEN_READ;
    apr_file_t *file = NULL;
    apr_bucket_brigade *bb;
    apr_bucket *e;
    int copy = dup(fd);
    if (copy < 0) {
        return -1;
    }
    if (d->enable_sendfile == ENABLE_SENDFILE_ON) {
        flags |= APR_FOPEN_SENDFILE_ENABLED;
    }
    if (apr_os_file_put(&file, &copy, flags, r->pool) != APR_SUCCESS) {
        close(copy);
        return -1;
    }
    apr_pool_cleanup_register(r->pool, file, wsgi_rs_close_fd, apr_pool_cleanup_null);
    bb = apr_brigade_create(r->pool, r->connection->bucket_alloc);
    e = apr_brigade_insert_file(bb, file, offset, len, r->pool);
#if APR_HAS_MMAP
    if (d->enable_mmap == ENABLE_MMAP_OFF) {
        (void)apr_bucket_file_enable_mmap(e, 0);
    }
#endif
    if (ap_pass_brigade(r->output_filters, bb) != APR_SUCCESS || r->connection->aborted) {
        return -1;
    }
    return 0;
}

/* Ends a response whose body already started without a clean end (the app failed, or sent
 * less than its Content-Length): the client must be able to tell. */
void wsgi_rs_abort(request_rec *r)
{
    conn_rec *c = r->connection;
    apr_bucket_brigade *bb = apr_brigade_create(r->pool, c->bucket_alloc);
    APR_BRIGADE_INSERT_TAIL(bb, ap_bucket_error_create(HTTP_BAD_GATEWAY, NULL, r->pool,
                                                       c->bucket_alloc));
    APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_eos_create(c->bucket_alloc));
    ap_pass_brigade(r->output_filters, bb);
    c->keepalive = AP_CONN_CLOSE;
    c->aborted = 1;
}

/* A line in the error log, for the request (or the server when r is NULL). */
void wsgi_rs_log(request_rec *r, int level, const char *message)
{
    if (r != NULL) {
        ap_log_rerror(APLOG_MARK, level, 0, r, "mod_wsgi_rs: %s", message);
    } else {
        ap_log_error(APLOG_MARK, level, 0, NULL, "mod_wsgi_rs: %s", message);
    }
}

/* A line an application wrote (wsgi.errors, sys.stderr, print()), as it is: mod_wsgi adds no
 * prefix to them. */
void wsgi_rs_log_text(request_rec *r, int level, const char *text)
{
    if (r != NULL) {
        ap_log_rerror(APLOG_MARK, level, 0, r, "%s", text);
    } else {
        ap_log_error(APLOG_MARK, level, 0, ap_server_conf, "%s", text);
    }
}

/* Whether a line at `level` for this request (or the server) reaches the error log. */
int wsgi_rs_log_enabled(request_rec *r, int level)
{
    if (r != NULL) {
        return APLOG_R_IS_LEVEL(r, level);
    }
    return ap_server_conf == NULL || APLOG_IS_LEVEL(ap_server_conf, level);
}

/* The httpd release the module is built for (`apache.version`, as mod_wsgi gives it). */
void wsgi_rs_apache_version(int *major, int *minor, int *patch)
{
    *major = AP_SERVER_MAJORVERSION_NUMBER;
    *minor = AP_SERVER_MINORVERSION_NUMBER;
    *patch = AP_SERVER_PATCHLEVEL_NUMBER;
}

/* Whether an output filter that transforms content (below AP_FTYPE_PROTOCOL: mod_deflate,
 * mod_cache's, ...) is in the chain: then a HEAD must produce the body it would for GET. */
int wsgi_rs_has_content_filters(request_rec *r)
{
    ap_filter_t *f;
    for (f = r->output_filters; f != NULL; f = f->next) {
        if (f->frec != NULL && f->frec->ftype < AP_FTYPE_PROTOCOL) {
            return 1;
        }
    }
    return 0;
}

/* translate_name mapped the request with a WSGIScriptAlias, as mod_wsgi's does: Apache's
 * directory walk then splits `filename` into the script and PATH_INFO and applies the script
 * folder's <Directory> sections (Require, auth, Options MultiViews). For an alias of a script
 * file the split is known: `filename` is the script and `path_info` (not empty) the rest, which
 * the walk keeps and appends to whatever it finds, as for any preset PATH_INFO. It then finds
 * the script with one stat instead of a stat of every folder on the way (with FollowSymLinks;
 * otherwise it still checks each). The handler is mod_wsgi's `wsgi-script`, which mod_mime's
 * AddHandler or a SetHandler may still replace, as under mod_wsgi; the notes survive
 * MultiViews' internal redirect and tell the handler the request is script-aliased (no
 * ExecCGI needed) and which URI the alias mapped. */
void wsgi_rs_set_target(request_rec *r, const char *filename, apr_size_t filename_len,
                        const char *path_info, apr_size_t path_info_len)
{
    r->filename = apr_pstrmemdup(r->pool, filename, filename_len);
    if (path_info_len > 0) {
        r->path_info = apr_pstrmemdup(r->pool, path_info, path_info_len);
    }
    r->handler = WSGI_RS_SCRIPT_HANDLER;
    apr_table_setn(r->notes, "alias-forced-type", WSGI_RS_SCRIPT_HANDLER);
    apr_table_setn(r->notes, WSGI_RS_ALIAS_NOTE, apr_pstrdup(r->pool, r->uri));
}

static int wsgi_rs_translate_name(request_rec *r)
{
    return wsgi_rs_translate(r);
}

/* mod_wsgi's handler names: `wsgi-script` (WSGIScriptAlias requests, and files that
 * AddHandler or SetHandler give it, where Options ExecCGI allows), its MIME-type spelling,
 * and the names of WSGIHandlerScripts (src/handlers.rs). */
static int wsgi_rs_handler(request_rec *r)
{
    int status;
    int script_handler;
    if (r->handler == NULL) {
        return DECLINED;
    }
    script_handler = strcmp(r->handler, WSGI_RS_SCRIPT_HANDLER) != 0
                     && strcmp(r->handler, "application/x-httpd-wsgi") != 0;
    if (script_handler && !wsgi_rs_is_script_handler(r->handler)) {
        return DECLINED;
    }
    status = ap_setup_client_block(r, REQUEST_CHUNKED_DECHUNK);
    if (status != OK) {
        return status;
    }
    return script_handler ? wsgi_rs_handle_script_handler(r, r->handler) : wsgi_rs_handle(r);
}

static apr_status_t wsgi_rs_child_cleanup(void *data)
{
    wsgi_rs_child_exit();
    return APR_SUCCESS;
}

static void wsgi_rs_child_init_hook(apr_pool_t *pchild, server_rec *s)
{
    wsgi_rs_child_init();
    apr_pool_cleanup_register(pchild, NULL, wsgi_rs_child_cleanup, apr_pool_cleanup_null);
}

void wsgi_rs_register_hooks(apr_pool_t *p)
{
    /* After mod_alias and before mod_userdir and mod_vhost_alias, as mod_wsgi orders its
     * translate hook: an Alias or Redirect that matches a URL wins over a WSGIScriptAlias
     * (`Alias /static/ ...` beside `WSGIScriptAlias / app.wsgi` serves the folder). */
    static const char *const before_us[] = { "mod_alias.c", NULL };
    static const char *const after_us[] = { "mod_userdir.c", "mod_vhost_alias.c", NULL };
    ap_hook_pre_config(wsgi_rs_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_test_config(wsgi_rs_test_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(wsgi_rs_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(wsgi_rs_child_init_hook, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_translate_name(wsgi_rs_translate_name, before_us, after_us, APR_HOOK_MIDDLE);
    ap_hook_handler(wsgi_rs_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_check_access(wsgi_rs_access_checker, NULL, NULL, APR_HOOK_MIDDLE,
                         AP_AUTH_INTERNAL_PER_CONF);
    ap_register_auth_provider(p, AUTHN_PROVIDER_GROUP, "wsgi", AUTHN_PROVIDER_VERSION,
                              &wsgi_rs_authn_provider, AP_AUTH_INTERNAL_PER_CONF);
    ap_register_auth_provider(p, AUTHZ_PROVIDER_GROUP, "wsgi-group", AUTHZ_PROVIDER_VERSION,
                              &wsgi_rs_authz_provider, AP_AUTH_INTERNAL_PER_CONF);
}

/* The MPM's processes and threads per child, read as mod_wsgi reads them for
 * mod_wsgi.maximum_processes and threads_per_process in embedded mode: the highest process slot
 * used so far (else the configured maximum); 1 for what the MPM cannot say. */
void wsgi_rs_mpm_limits(int *processes, int *threads)
{
    int threaded = 0, forked = 0, max_threads = 0, max_processes = 0;
    ap_mpm_query(AP_MPMQ_IS_THREADED, &threaded);
    if (threaded != AP_MPMQ_NOT_SUPPORTED)
        ap_mpm_query(AP_MPMQ_MAX_THREADS, &max_threads);
    ap_mpm_query(AP_MPMQ_IS_FORKED, &forked);
    if (forked != AP_MPMQ_NOT_SUPPORTED) {
        ap_mpm_query(AP_MPMQ_MAX_DAEMON_USED, &max_processes);
        if (max_processes == -1)
            ap_mpm_query(AP_MPMQ_MAX_DAEMONS, &max_processes);
    }
    *threads = max_threads > 0 ? max_threads : 1;
    *processes = max_processes > 0 ? max_processes : 1;
}
