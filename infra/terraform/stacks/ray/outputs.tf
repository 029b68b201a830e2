output "namespace" {
  description = "Namespace of redraft's Ray objects."
  value       = module.ray.namespace
}

output "port_forward_commands" {
  description = "Reach the Serve cluster's Ray dashboard (localhost:8265) and API (localhost:8000)."
  value       = module.ray.port_forward_commands
}

output "run_nightly_now_command" {
  description = "Starts a run of the nightly job now."
  value       = module.ray.run_now_command
}

output "nightly_cron_job" {
  description = "Name of the nightly CronJob."
  value       = module.ray.nightly_cron_job
}

output "internal_load_balancer_service" {
  description = "Service of the internal NLB, if enabled (kubectl -n <namespace> get svc <name> shows its DNS name)."
  value       = module.ray.internal_load_balancer_service
}
