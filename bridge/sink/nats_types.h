// nats.c's types, declared without including <nats/nats.h> (its headers stay in the .cc files).
#pragma once

struct __natsConnection;
struct __jsCtx;
struct __natsMsg;
struct jsPubAck;
struct jsPubAckErr;
typedef struct __natsConnection natsConnection;
typedef struct __jsCtx jsCtx;
typedef struct __natsMsg natsMsg;
