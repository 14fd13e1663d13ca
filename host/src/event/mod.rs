//! Market-data events as they travel through queues: the seed's queue JSON
//! (seed-inventory §4.1), decoded into the typed form analyzers receive.
