output "namespace" {
  description = "Namespace of the Ray objects."
  value       = kubernetes_namespace_v1.this.metadata[0].name
}

output "serve_cluster_name" {
  description = "Name of the Serve RayCluster."
  value       = var.serve.name
}

output "serve_head_service" {
  description = "ClusterIP Service KubeRay creates for the Serve head (dashboard 8265, Serve 8000, metrics 8080)."
  value       = "${var.serve.name}-head-svc"
}

output "port_forward_commands" {
  description = "Commands that reach the Serve cluster's dashboard and API from your machine."
  value = {
    dashboard = "kubectl -n ${var.namespace} port-forward svc/${var.serve.name}-head-svc 8265:8265"
    serve     = "kubectl -n ${var.namespace} port-forward svc/${var.serve.name}-head-svc 8000:8000"
  }
}

output "internal_load_balancer_service" {
  description = "Name of the internal load balancer Service (null when internal_load_balancer is false); its hostname is in status.loadBalancer."
  value       = var.internal_load_balancer ? kubernetes_service_v1.serve_internal[0].metadata[0].name : null
}

output "nightly_cron_job" {
  description = "Name of the CronJob that starts the nightly RayJob."
  value       = kubernetes_cron_job_v1.nightly.metadata[0].name
}

output "run_now_command" {
  description = "Command that starts a run of the nightly job immediately."
  value       = "kubectl -n ${var.namespace} create job --from=cronjob/${kubernetes_cron_job_v1.nightly.metadata[0].name} redraft-manual-$(date +%s)"
}

output "nightly_ray_job_template" {
  description = "The RayJob each scheduled run creates (also stored in the redraft-nightly-rayjob ConfigMap)."
  value       = module.manifests.nightly_ray_job
}
