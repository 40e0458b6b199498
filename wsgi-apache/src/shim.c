/*
 * The C face of mod_wsgi_rs: Apache's command table, its one directive callback and the
 * configuration hooks. It only reads Apache's structures and hands plain values to Rust, where
 * wsgi-config's builder (the same code `wsgi check` runs) accepts or refuses each directive.
 * The module structure itself is defined in Rust (src/module.rs), which exports it.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_main.h"
#include "apr_strings.h"

/* The layout the Rust mirror of `module` (src/module.rs) assumes, checked on both sides. */
_Static_assert(offsetof(module, cmds) == 88, "module.cmds offset");
_Static_assert(offsetof(module, register_hooks) == 96, "module.register_hooks offset");
_Static_assert(sizeof(module) == 112, "module size");

/* One enclosing section, outermost first. */
struct wsgi_rs_section {
    const char *kind;
    const char *args;
    const char *file;
    int line;
};

/* Rust (src/config.rs). Returned strings are freed with wsgi_rs_free. */
extern char *wsgi_rs_directive(const char *name, const char *args, const char *file, int line,
                               const struct wsgi_rs_section *sections, int count,
                               int htaccess);
extern void wsgi_rs_reset(const char *server_root);
extern void wsgi_rs_server_name(const char *vhost_file, int vhost_line, const char *name,
                                const char *const *aliases, int alias_count);
extern char *wsgi_rs_finish(void);
extern void wsgi_rs_free(char *text);

#define WSGI_RS_MAX_DEPTH 64

static const char *wsgi_rs_cmd(cmd_parms *cmd, void *mconfig, const char *args)
{
    struct wsgi_rs_section sections[WSGI_RS_MAX_DEPTH];
    const ap_directive_t *chain[WSGI_RS_MAX_DEPTH];
    const ap_directive_t *d = cmd->directive;
    const ap_directive_t *p;
    int depth = 0;
    int i;
    int htaccess = (cmd->override & (RSRC_CONF | ACCESS_CONF)) == 0;
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
    error = wsgi_rs_directive(cmd->cmd->name, args ? args : "",
                              d && d->filename ? d->filename : "",
                              d ? d->line_num : 0, sections, depth, htaccess);
    if (error == NULL) {
        return NULL;
    }
    copy = apr_pstrdup(cmd->pool, error);
    wsgi_rs_free(error);
    return copy;
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
    return wsgi_rs_finish();
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

static int wsgi_rs_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                               server_rec *s)
{
    char *errors = wsgi_rs_complete(s);
    if (errors != NULL) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "mod_wsgi_rs: %s", errors);
        wsgi_rs_free(errors);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    return OK;
}

void wsgi_rs_register_hooks(apr_pool_t *p)
{
    ap_hook_pre_config(wsgi_rs_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_test_config(wsgi_rs_test_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(wsgi_rs_post_config, NULL, NULL, APR_HOOK_MIDDLE);
}
