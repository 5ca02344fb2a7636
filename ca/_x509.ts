/**
 * The one place that loads @peculiar/x509: `reflect-metadata` must be evaluated first
 * (PLATFORM.md, Libraries), and module imports evaluate in order.
 * @module
 */
import "reflect-metadata";
export * as x509 from "@peculiar/x509";
