#ifndef BATON_CLIBCRYPTO_SHIM_H
#define BATON_CLIBCRYPTO_SHIM_H
// OpenSSL's libcrypto (Debian's libssl-dev): HMAC-SHA-256 for signing the node API's writes, and a
// constant-time comparison.
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#endif
