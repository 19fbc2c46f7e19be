# A workspace template for Poolkeeper's terraform provisioner that needs no network and no
# provider download: `terraform_data` is built into terraform itself.
#
# The provisioner passes the variables below with -var on every run. A template whose
# presets set parameters must declare a variable for each of them too.

terraform {
  required_version = ">= 1.4"
}

variable "workspace_id" {
  type = string
}

variable "workspace_name" {
  type = string
}

variable "owner" {
  type = string
}

# start, stop or delete. A stopped workspace keeps nothing running, so the compute
# resource exists only while started; the home volume lives until delete (destroy).
variable "transition" {
  type = string
}

resource "terraform_data" "home" {
  input = "home-${var.workspace_id}"
}

resource "terraform_data" "compute" {
  count = var.transition == "start" ? 1 : 0
  input = {
    workspace = var.workspace_name
    owner     = var.owner
    home      = terraform_data.home.output
  }
}

output "compute_running" {
  value = length(terraform_data.compute) > 0
}
