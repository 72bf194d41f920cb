#ifndef PKR_CLIBCRYPTO_SHIM_H
#define PKR_CLIBCRYPTO_SHIM_H
/* SHA256_Init and friends are deprecated in OpenSSL 3 in favour of EVP, but the one-shot SHA256() looks the
   algorithm up by name on every call, which cost more than hashing a ledger entry itself. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <openssl/rand.h>

/* SHA-256 of `count` bytes into `out` (32 bytes), on a context on the stack: no allocation, no lookup. */
static inline int pkr_sha256(const unsigned char *data, size_t count, unsigned char *out) {
    SHA256_CTX context;
    if (SHA256_Init(&context) != 1) return 0;
    if (SHA256_Update(&context, data, count) != 1) return 0;
    return SHA256_Final(out, &context);
}
#endif
