/*
 * microstream: TLS with GnuTLS (library microstream-tls).
 *
 * A sans-IO layer: GnuTLS reads and writes memory buffers (push/pull
 * functions), never a socket. An ms_tls object holds the credentials and
 * policy; ms_tls_wrap() hands out the ms_stream_wrap that the drivers put
 * between a stream and an engine:
 *
 *   client: ms_client_config.tls = ms_tls_wrap(tls);  url "wss://host/ws"
 *   hub:    ms_posix_hub_listen_tls(ph, host, port, ms_tls_wrap(tls), &p)
 *
 * Clients verify the server's certificate chain (the system trust store,
 * or only the CA file given) and its host name, send SNI and offer ALPN
 * "http/1.1". A failed verification or handshake ends the connection with
 * a reason (ms_stream_wrap error()); nothing ever falls back to plaintext.
 * A server answers a plaintext HTTP request with a short 400 saying that
 * the port speaks TLS.
 *
 * Bounds: at most 64 KiB of ciphertext is produced ahead of the socket
 * (the inner engine's output waits, as on a plain connection), at most
 * 256 KiB of received ciphertext is buffered, and the drivers close a
 * stream whose handshake is not done within handshake_timeout_ms.
 *
 * An ms_tls must outlive the drivers that use it; sessions keep the
 * credentials they started with, so ms_tls_reload() never disturbs them.
 */
#ifndef MICROSTREAM_MS_TLS_H
#define MICROSTREAM_MS_TLS_H

#include <microstream/ms_common.h>
#include <microstream/ms_transport.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ms_tls ms_tls;

/* Server side: certificate chain and key (PEM files). client_ca_file
 * (may be NULL): also ask for a client certificate and require one signed
 * by this CA. Returns 0, MS_ERR_INVALID_ARG (bad file: `err` says why),
 * MS_ERR_NOMEM. */
MS_EXTERN int ms_tls_server_new(ms_tls **out, const char *cert_file,
                                const char *key_file,
                                const char *client_ca_file, char *err,
                                size_t err_cap);

/* Client side: trust only ca_file (PEM), or the system's store when
 * NULL. cert_file/key_file (may be NULL): a client certificate. */
MS_EXTERN int ms_tls_client_new(ms_tls **out, const char *ca_file,
                                const char *cert_file, const char *key_file,
                                char *err, size_t err_cap);

/* Server side: load a new certificate and key (and client CA) for the
 * connections that start from now on. On failure the old ones stay. */
MS_EXTERN int ms_tls_reload(ms_tls *t, const char *cert_file,
                            const char *key_file, const char *client_ca_file,
                            char *err, size_t err_cap);

/* The wrapper to give drivers (valid as long as t). */
MS_EXTERN const ms_stream_wrap *ms_tls_wrap(ms_tls *t);

/* Handshake deadline for new streams (default 10000 ms). */
MS_EXTERN void ms_tls_set_handshake_timeout(ms_tls *t, int64_t ms);

/* Wrapped streams open now (for tests and metrics). */
MS_EXTERN size_t ms_tls_streams(const ms_tls *t);

/* NULL is a no-op. Streams still open keep their credentials. */
MS_EXTERN void ms_tls_del(ms_tls *t);

#ifdef __cplusplus
}
#endif

#endif
