"""`pfs deploy kubernetes` and `pfs undeploy`: pfs servers on a Kubernetes cluster. manifests.py makes the objects
(pure data); cluster.py applies and deletes them, through the Kubernetes client (pfs[kubernetes]), imported only
then."""
